"""The case studies' data: real sets read from installed packages (nothing is downloaded).

``load("security/spamassassin")`` returns any set by name with its source and licence in
``df.attrs``; ``list()`` is the table of every set (domain, modality, rows, licence, installed?).
Each loader function says where its data comes from, its columns and its licence.

One module per modality, each loader also importable from here: ``text`` (drug reviews, emails,
logs, diagnoses), ``image`` (clip-art products, faces, digits), ``speech`` (LibriVox, telephone
prompts, speech synthesis), ``parallel`` (translation pairs), ``tabular``.
"""
from __future__ import annotations

from .image import clipart_products, digits, lfw_faces
from .parallel import currency_names, heldout_translations, shop_strings, ui_strings
from .speech import asterisk_prompts, drug_name_sentences, drug_name_speech, librivox_clips, synthesize_speech
from .tabular import breast_cancer, cdnow, smarket
from .text import drug_reviews, fail2ban_logs, icd10cm_chapters, spamassassin

# the catalogue (last: `list` shadows the builtin inside this module from here on)
from ._catalog import catalogue as list, load  # noqa: E402,A001

__all__ = [
    "asterisk_prompts", "breast_cancer", "cdnow", "clipart_products", "currency_names", "digits", "drug_name_sentences",
    "drug_name_speech", "drug_reviews", "fail2ban_logs", "heldout_translations", "icd10cm_chapters", "lfw_faces",
    "librivox_clips", "list", "load", "shop_strings", "smarket", "spamassassin", "synthesize_speech", "ui_strings",
]
