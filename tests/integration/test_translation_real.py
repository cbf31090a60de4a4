"""Translation on real parallel text: the human-translated interface strings of this machine's programs.

No translation model is packaged offline (shared/MODELS.md), so these tests check the data and the
task's mechanics on real text (umlauts, placeholders, newlines), with a tiny random Marian;
translation quality needs a named hub model or one trained here (see the note on the issue).
Measured on 2 CPU cores: 54,381 unique English-German pairs from 82 programs; copying the
English unchanged scores chrF 36.7 on held-out programs' strings of up to 50 characters.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

import appkit  # noqa: E402
from appkit import samples  # noqa: E402
from appkit._samples_translation import LOCALE_DIR  # noqa: E402

from ..conftest import make_tiny_marian_folder  # noqa: E402

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not list((LOCALE_DIR / "de" / "LC_MESSAGES").glob("*.mo")),
                                 reason="no German .mo files in /usr/share/locale")]


def _held_out(df):
    apps = sorted(df.app.unique())
    test_apps = apps[::8]                                     # whole programs held out, not random strings
    return df[~df.app.isin(test_apps)], df[df.app.isin(test_apps)]


def test_ui_strings_are_real_parallel_text():
    df = samples.ui_strings("de")
    print(f"\n{len(df)} English-German pairs from {df.app.nunique()} programs; unreadable: {df.attrs['unreadable']}")
    assert len(df) > 20_000 and df.app.nunique() > 30
    assert not df.source.duplicated().any() and df.source.str.len().max() <= 200
    assert df.target.str.contains("[äöüß]").sum() > 1_000      # German, decoded as text
    assert not df.source.str.contains("\x04").any()           # message contexts are not part of the text
    with pytest.raises(appkit.AppkitError, match=r"No translations for 'xx'.*installed languages.*'de'"):
        samples.ui_strings("xx")


def test_fine_tune_and_evaluate_on_real_strings_held_out_by_program(tmp_path):
    short = samples.ui_strings("de", max_chars=50)           # the tiny model reads 64 byte-level tokens
    train, test = _held_out(short)
    train, test = train.sample(300, random_state=0), test.sample(60, random_state=0)
    mt = appkit.load("translation", make_tiny_marian_folder(tmp_path / "marian"))
    run = mt.fine_tune(train, epochs=1, batch_size=16, learning_rate=1e-3, output_dir=tmp_path / "run", progress=False)
    assert run.history["train_loss"].notna().any()
    report = mt.evaluate(test, slice_by="app")
    (name, copy_chrf), = report.baseline.items()
    print(f"\ncopying the English unchanged: chrF {copy_chrf:.1f}; tiny random model: {report.metrics}")
    assert 10 < copy_chrf < 45 and report.metrics["chrf"] < copy_chrf   # the bar a real model must clear
    assert report.slices.value.nunique() >= 2
    html = report.to_html(tmp_path / "report.html")
    assert "copying the source" in html.read_text(encoding="utf-8")
