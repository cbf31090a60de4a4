"""Translation on a tiny random Marian built in the test (d_model 32, byte-level vocabulary): seconds, no outside files."""
from __future__ import annotations

import re

import pandas as pd
import pytest

import appkit
from appkit.errors import AppkitError, DataError, ModelError

from ..conftest import make_tiny_bert_folder, make_tiny_marian_folder, toy_pairs


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_marian_folder(tmp_path_factory.mktemp("tiny") / "marian")


@pytest.fixture
def mt(folder):
    return appkit.load("translation", folder)


def test_fine_tune_learns_the_toy_dictionary_and_the_report_explains_it(mt, tmp_path):
    pairs = toy_pairs()
    before = mt.evaluate(pairs)
    run = mt.fine_tune(pairs, epochs=100, learning_rate=5e-3, batch_size=8, output_dir=tmp_path / "run", progress=False)
    assert run.strategy == "full"
    losses = run.history["train_loss"].dropna()
    assert losses.iloc[-1] < losses.iloc[0] / 5
    got = [r["translation"] for r in mt.predict(list(pairs.source))]
    assert sum(g == t for g, t in zip(got, pairs.target)) >= 14, list(zip(pairs.target, got))
    report = mt.evaluate(pairs, slice_by="kind")
    assert report.metrics["chrf"] > before.metrics["chrf"] + 40 and set(report.metrics) == {"bleu", "chrf"}
    assert set(report.slices.value) == {"word", "phrase"}
    (copy_name, copy_chrf), = report.baseline.items()
    assert "copying the source" in copy_name and copy_chrf < report.metrics["chrf"]
    html = report._repr_html_()
    assert "chrF" in html and "reference vs translation" in html and "above ~30 is usually understandable" in html


def test_saved_folder_loads_in_plain_transformers_with_the_same_output(mt, tmp_path):
    """transformers 5 has no translation pipeline: an application loads the folder with the Auto classes."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    mt.fine_tune(toy_pairs(), epochs=2, output_dir=tmp_path / "run", progress=False)
    folder = mt.save(tmp_path / "saved")
    texts = ["yes", "left right", "stop go"]
    model, tok = AutoModelForSeq2SeqLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        ids = model.generate(**tok(texts, return_tensors="pt", padding=True), max_new_tokens=9, num_beams=1)
    got = [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]
    want = [r["translation"] for r in appkit.load("translation", folder, precision="float32").predict(texts, max_new_tokens=9)]
    assert got == want


def test_batching_never_changes_a_result(mt):
    texts = ["yes", "left right up down", "go", "stop stop stop stop stop stop"]
    alone = [mt.predict(t)["translation"] for t in texts]
    assert [r["translation"] for r in mt.predict(texts, batch_size=4)] == alone
    assert [r["translation"] for r in mt.predict(texts, batch_size=3)] == alone


def test_wrong_models_and_options_are_named_with_the_fix(mt, tmp_path, folder):
    with pytest.raises(ModelError, match=re.escape("not a sequence-to-sequence model")):
        appkit.load("translation", make_tiny_bert_folder(tmp_path / "bert"))
    with pytest.raises(ModelError, match=r"No model is packaged offline.*opus-mt-en-de"):
        appkit.load("translation")
    with pytest.raises(ModelError, match="one language pair"):
        appkit.load("translation", folder, src_lang="en")
    with pytest.raises(ModelError, match=r"tgt_lang='xx' is not a language this model knows"):
        mt.predict("yes", tgt_lang="xx")
    with pytest.raises(AppkitError, match=r"Available: .*num_beams"):
        mt.predict("yes", beams=4)
    with pytest.raises(DataError, match="translation has no labels"):
        appkit.load("translation", folder, labels=["a", "b"])


def test_training_rows_without_a_target_are_named(mt, tmp_path):
    bad = pd.concat([toy_pairs(), pd.DataFrame([{"source": "hello", "target": " "}])], ignore_index=True)
    with pytest.raises(DataError, match=r"Row 16 of the training data has empty text in column 'target'"):
        mt.fine_tune(bad, epochs=1, progress=False, output_dir=tmp_path / "run")
    with pytest.raises(DataError, match=r"needs .*target|no column 'target'|'target'"):
        mt.fine_tune(toy_pairs().drop(columns=["target"]), epochs=1, progress=False, output_dir=tmp_path / "run")
    with pytest.raises(AppkitError, match=r"strategy 'head'.*\['auto', 'full'\]"):
        mt.fine_tune(toy_pairs(), strategy="head", progress=False)


def test_float32_and_bfloat16_paths_both_run(folder):
    for precision in ("float32", "bfloat16"):
        mt = appkit.load("translation", folder, precision=precision)
        assert isinstance(mt.predict("left right")["translation"], str)


def test_a_text_longer_than_the_model_reads_is_named_not_cut(mt):
    long = "left right " * 20                                          # ~200 byte tokens; the tiny model reads 64
    with pytest.raises(DataError, match=r"Input 1 is \d+ tokens long; the model reads at most 64"):
        mt.predict(["yes", long])
    with pytest.warns(UserWarning, match="Skipped 1 of 2"):
        out = mt.predict(["yes", long], errors="skip")
    assert out[1] is None and isinstance(out[0]["translation"], str)
