"""The sample catalogue and its loaders: real files, documented columns, errors that name the install step."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

import appkit.samples as samples
from appkit.errors import DataError, UnknownNameError
from appkit.samples import _catalog, text

ROOT = Path(samples.__file__).parents[1]


def test_every_loader_lives_in_its_modality_module_and_imports_from_samples():
    from appkit.samples import (  # noqa: F401   (the names notebooks and the README use)
        asterisk_prompts, clipart_products, drug_name_sentences, drug_name_speech, drug_reviews, librivox_clips,
        synthesize_speech, ui_strings,
    )

    for name in samples.__all__:
        module = getattr(samples, name).__module__
        assert module.startswith("appkit.samples.") and not module.rsplit(".", 1)[1].startswith("_") \
            or name in ("list", "load"), (name, module)
    for entry in _catalog.SETS:       # each catalogue entry names its modality module
        assert entry.function() is getattr(samples, entry.loader.split(":")[1]), entry.name
    assert not list(ROOT.glob("_samples_*.py"))


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT.parent / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_clipart_builder_script_drops_twins_and_duplicates(tmp_path):
    """scripts/build_clipart.py on a tiny stand-in for openclipart-png: one label per folder."""
    import numpy as np
    from PIL import Image

    build = _script("build_clipart")
    root, rng = tmp_path / "openclipart", np.random.default_rng(0)
    for folder, names in (("food/fruit", ["apple", "apple_bw", "pear", "plum"]), ("tools", ["hammer", "saw", "road_sign"])):
        (root / folder).mkdir(parents=True)
        for name in names:
            pixels = np.zeros((30, 40, 4), np.uint8)             # a transparent canvas with a drawing in it
            pixels[4:24, 6:30] = rng.integers(0, 256, (20, 24, 4))
            pixels[4:24, 6:30, 3] = 255
            Image.fromarray(pixels).save(root / folder / f"{name}.png")
    Image.open(root / "tools" / "saw.png").save(root / "tools" / "saw_copy.png")   # the same picture twice
    counts = build.build_clipart_products(tmp_path / "out", categories={"fruit": ["food/fruit"], "tools": ["tools"]},
                                          per_class=5, size=16, root=root)
    # apple_bw is apple's black-and-white twin, saw_copy a duplicate, road_sign no product
    assert counts == {"fruit": 3, "tools": 2}
    assert sorted(p.stem for p in (tmp_path / "out" / "tools").glob("*.jpg")) == ["hammer", "saw"]
    df = samples.clipart_products(folder=tmp_path / "out")
    assert len(df) == 5 and set(df.label) == {"fruit", "tools"} and set(df.split) == {"train", "test"}
    with pytest.raises(DataError, match="make clipart-source"):
        build.build_clipart_products(tmp_path / "out2", root=tmp_path / "nowhere")


def test_list_is_a_table_of_every_set_with_its_licence_and_install_state():
    table = samples.list()
    assert list(table.columns[:6]) == ["name", "domain", "modality", "rows", "licence", "installed"]
    assert set(table.domain) == {"finance", "medical", "security", "education", "ecommerce"}
    assert {"text", "image", "speech", "translation", "tabular"} <= set(table.modality)
    assert table.licence.str.len().min() > 2 and table.installed.dtype == bool
    assert table.loc[table.name == "medical/drug-name-speech", "synthetic"].item()
    assert set(samples.list("security").domain) == {"security"}
    with pytest.raises(UnknownNameError, match="Did you mean 'finance'"):
        samples.list("finanse")


def test_unknown_set_names_the_close_one():
    with pytest.raises(UnknownNameError, match=re.escape("Did you mean 'security/spamassassin'?")):
        samples.load("security/spam-assassin")


def test_spamassassin_is_the_real_corpus_with_its_source_in_attrs():
    df = samples.load("security/spamassassin")
    assert len(df) == 5884 and df.label.value_counts().to_dict() == {"ham": 4108, "spam": 1776}
    assert {"text", "label", "group", "subject", "sender_domain", "finance"} <= set(df.columns)
    assert df.text.str.len().min() > 0 and df.text.is_unique
    assert df.attrs["licence"] == "PDDL-1.0 / CC0-1.0" and "SpamAssassin" in df.attrs["source"]
    fin = samples.load("finance/phishing-emails")
    assert len(fin) == df.finance.sum() and fin.finance.all() and set(fin.label) == {"spam", "ham"}


def test_fail2ban_logs_are_labelled_lines_of_many_services():
    df = samples.load("security/fail2ban-logs")
    assert len(df) > 1000 and set(df.label) == {"attack", "benign"}
    assert df.service.nunique() > 50 and (df.label == "benign").sum() > 150
    assert df.attrs["licence"].startswith("GPL")
    assert df.text.str.startswith("#").sum() == 0


def test_fail2ban_missing_names_the_make_target(monkeypatch, tmp_path):
    monkeypatch.setattr(text, "FAIL2BAN_DIRS", [tmp_path / "nowhere"])
    with pytest.raises(DataError, match=re.escape("make fail2ban-logs")):
        samples.load("security/fail2ban-logs")


def test_a_missing_pip_package_names_make_setup_and_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ISLP" else real(name, *a))
    with pytest.raises(DataError, match=re.escape("pip install --no-deps ISLP==0.6.0")):
        samples.load("finance/smarket")
    assert not samples.list().set_index("name").loc["finance/smarket", "installed"]


def test_icd10cm_descriptions_map_to_chapters():
    df = samples.load("medical/icd10cm-chapters")
    assert len(df) > 40000 and df.label.nunique() >= 21
    row = df[df.code == "J45.909"].iloc[0]
    assert "asthma" in row.text.lower() and row.label == "Diseases of the respiratory system"


def test_image_sets_are_png_files_with_labels():
    from PIL import Image

    faces = samples.load("security/lfw-faces")
    assert faces.label.value_counts().to_dict() == {"face": 100, "not-face": 100}
    with Image.open(faces.image[0]) as im:
        assert im.size == (100, 100)
    digits = samples.load("education/digits")
    assert len(digits) == 1797 and sorted(digits.label.unique()) == [str(i) for i in range(10)]
    assert digits.pixels[0].shape == (64,) and 0 <= digits.pixels[0].min() and digits.pixels[0].max() <= 1


def test_tabular_sets():
    assert samples.load("finance/smarket").Direction.value_counts().to_dict() == {"Up": 648, "Down": 602}
    cd = samples.load("ecommerce/cdnow")
    assert len(cd) == 69659 and cd.customer_id.nunique() == 23570 and pd.api.types.is_datetime64_any_dtype(cd.date)
    assert samples.load("medical/breast-cancer").label.value_counts().to_dict() == {"benign": 357, "malignant": 212}


def test_parallel_text_sets():
    shop = samples.load("ecommerce/shop-strings")
    assert len(shop) > 1500 and shop.source.is_unique
    assert shop.set_index("source").loc["Basket", "target"] == "Warenkorb"
    cur = samples.load("finance/currency-names")
    assert cur.set_index("source").loc["Euro", "target"] == "Euro" and len(cur) > 150


def test_declared_row_counts_match_what_loads():
    for name in ["security/spamassassin", "finance/phishing-emails", "security/fail2ban-logs", "security/lfw-faces",
                 "medical/drug-reviews", "finance/smarket", "finance/currency-names", "ecommerce/shop-strings",
                 "ecommerce/clipart-products", "education/librivox"]:
        assert len(samples.load(name)) == _catalog.BY_NAME[name].rows, name
