"""EvalReport: intervals that match the point estimates, the HTML parsed as a stakeholder's browser would
get it, MathJax-safe text, a snapshot independent of the task, and the model / data card written on save."""
from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from appkit.evaluation import (EvalReport, Metrics, _auc_draws, _ece_draws, bootstrap_intervals,
                               classification_stats)
from appkit.report import notebook_safe

from ..conftest import text_train_frame, tiny_speech, tiny_text, tiny_translation

DOLLAR_TEXT = "it cost me $8/month, then about $100 for \\(x\\) refills"


class _Page(HTMLParser):
    """Collects what a browser would load (src/href), the visible text, and tags."""

    def __init__(self):
        super().__init__()
        self.urls, self.tags, self.text, self.metas = [], [], [], []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "meta":
            self.metas.append(a)
        for k in ("src", "href"):
            if a.get(k):
                self.urls.append(a[k])
        if tag in ("style", "title"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "title"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


@pytest.fixture
def evaluated(tmp_path):
    case = tiny_text(tmp_path)
    clf = case.task
    clf.fine_tune(text_train_frame(), epochs=2, progress=False, output_dir=tmp_path / "run")
    test = text_train_frame(40)
    test.loc[1, "text"] = DOLLAR_TEXT      # label negative; the tiny model gets it wrong or right, shown either way
    test["shop"] = ["north" if i % 3 else "south" for i in range(len(test))]
    return clf, test, clf.evaluate(test, slice_by="shop")


def test_vectorised_bootstrap_statistics_equal_the_reported_metrics():
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    from appkit.metrics import expected_calibration_error as _ece

    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    y_pred[:120] = y_true[:120]
    ident = np.arange(200)[None, :]
    s = classification_stats(y_true, y_pred, 3, ident)
    assert s["accuracy"][0] == pytest.approx(accuracy_score(y_true, y_pred))
    assert s["macro_f1"][0] == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro", zero_division=0))
    assert s["weighted_f1"][0] == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1, 2], average="weighted", zero_division=0))
    scores = rng.dirichlet([1, 1, 1], 200)
    assert _auc_draws(y_true, scores, 3, ident)[0] == pytest.approx(roc_auc_score(y_true, scores, multi_class="ovr"))
    conf, correct = scores.max(1), (y_true == y_pred).astype(float)
    assert _ece_draws(conf, correct, ident)[0] == pytest.approx(_ece(conf, correct))


def test_speech_and_translation_intervals_resample_the_corpus_scores():
    from appkit.metrics import bleu_chrf, wer_cer

    refs = ["the cat sat on the mat", "a dog runs home", "hello world again", "it is 15 dollars"] * 10
    hyps = ["the cat sat on a mat", "a dog ran home", "hello there world", "it is fifteen dollars"] * 10
    t = pd.DataFrame({"reference": refs, "prediction": hyps, "wer": [wer_cer([r], [h])["wer"] for r, h in zip(refs, hyps)]})
    m = {**wer_cer(refs, hyps), **bleu_chrf(refs, hyps), "sentence_error_rate": 0.75}
    iv = bootstrap_intervals(t, m, None)
    for k in ("wer", "cer", "bleu", "chrf", "sentence_error_rate"):
        lo, hi = iv[k]
        assert lo <= m[k] <= hi and lo < hi, (k, lo, m[k], hi)
    # a resample that is the data itself gives the reported value exactly
    from appkit.evaluation import _speech_draws, _translation_draws

    ident = np.arange(len(t))[None, :]
    assert _speech_draws(t, ident)["wer"][0] == pytest.approx(m["wer"])
    assert _speech_draws(t, ident)["cer"][0] == pytest.approx(m["cer"])
    assert _translation_draws(t, ident)["chrf"][0] == pytest.approx(m["chrf"])
    assert _translation_draws(t, ident)["bleu"][0] == pytest.approx(m["bleu"])
    assert bootstrap_intervals(t, m, None) == iv          # seeded: the same intervals every time


def test_html_report_is_self_contained_with_metrics_intervals_and_escaped_dollars(evaluated, tmp_path):
    _, test, report = evaluated
    path = report.to_html(tmp_path / "out" / "report.html", title="Shop reviews")
    raw = path.read_text()
    page = _Page()
    page.feed(raw)
    # one file: every image inline, nothing fetched (no script, stylesheet link, or URL)
    imgs = re.findall(r"<img[^>]*src=\"([^\"]+)\"", raw)
    assert len(imgs) >= 4 and all(s.startswith("data:image/") for s in imgs)
    assert all(u.startswith("data:") for u in page.urls), [u[:40] for u in page.urls if not u.startswith("data:")]
    assert "script" not in page.tags and "link" not in page.tags and not re.search(r"https?://", raw)
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in page.metas
    assert "max-width" in raw
    # the plain-language summary, headline metric and its interval
    text = "".join(page.text)
    acc = report.metrics["accuracy"]
    lo, hi = report.intervals["accuracy"]
    assert lo <= acc <= hi
    assert f"Right {acc:.0%} of the time (95% CI {lo * 100:.0f}-{hi * 100:.0f}%) on 40 test texts" in text
    assert f"{acc:.1%}" in text and f"95% CI {lo * 100:.0f}-{hi * 100:.0f}%" in text
    for k in ("macro_f1", "weighted_f1", "calibration_error"):
        assert f"{report.metrics[k]:.3f}" in text and k in report.intervals
    assert "shop" in text and "north" in text and "n" in report.slices
    # every $ and backslash of the user's text sits in its own element: MathJax cannot pair them
    if DOLLAR_TEXT in text:
        assert "$" not in re.sub(r"<span>\$</span>", "", raw.split("<body>")[1])
    assert "tex2jax_ignore" in raw and "mathjax_ignore" in raw


def test_dollar_text_in_worst_errors_is_escaped():
    report = EvalReport(task="text-classification", model="m", metrics=Metrics(accuracy=0.0), noun="reviews",
                        table=pd.DataFrame({"input": [DOLLAR_TEXT], "reference": ["a"], "prediction": ["b"],
                                            "score": [0.9], "correct": [False], "scores": [{"a": 0.1, "b": 0.9}]}),
                        labels=["a", "b"], order=[0], worst_columns=["input", "reference", "prediction", "score"])
    from appkit.report import table_html

    report.worst_html = table_html(report.worst(5))
    html_ = report._repr_html_()
    assert "<span>$</span>8/month" in html_ and "<span>\\</span>(x" in html_
    assert "on 1 test reviews" in html_


def test_notebook_safe_touches_text_only():
    s = '<img alt="$5" src="data:image/png;base64,AAAA"/><td>costs $5 \\[x\\]</td>'
    out = notebook_safe(s)
    assert out.startswith('<img alt="$5" src="data:image/png;base64,AAAA"/>')
    assert "costs <span>$</span>5 <span>\\</span>[x<span>\\</span>]" in out


def test_report_is_a_snapshot_and_prints_rounded(evaluated, tmp_path):
    clf, test, report = evaluated
    # it holds copies of what it shows, none of the task's own objects
    assert not any(v is obj for v in vars(report).values() for obj in (clf, clf.labels, clf.meta, clf.metric_info))
    before = report.worst(5).copy()
    html_before = report._repr_html_().split("Made with appkit")[0]
    shown = (dict(report.metrics), dict(report.intervals), report.summary(), report.runs_in, list(report.labels))
    clf.fine_tune(text_train_frame(), epochs=3, progress=False, output_dir=tmp_path / "run2", learning_rate=0.05)
    pd.testing.assert_frame_equal(report.worst(5), before)
    assert report._repr_html_().split("Made with appkit")[0] == html_before
    assert (dict(report.metrics), dict(report.intervals), report.summary(), report.runs_in, list(report.labels)) == shown
    copy.deepcopy(report)   # holds no model
    # exact values, rounded display
    m = Metrics(accuracy=0.38258575197889183, n=3)
    assert m["accuracy"] == 0.38258575197889183
    assert repr(m) == "{'accuracy': 0.3826, 'n': 3}"
    assert isinstance(report.metrics, Metrics)


def test_text_columns_are_left_aligned_and_numbers_right(evaluated):
    _, _, report = evaluated
    h = report._repr_html_()
    assert "text-align:left!important" in h and '<td class="num">' in h


@pytest.mark.parametrize("factory, phrase", [(tiny_speech, "of words wrong (95% CI"),
                                             (tiny_translation, "Scores chrF")])
def test_every_task_gets_a_plain_summary_with_an_interval(factory, phrase, tmp_path):
    case = factory(tmp_path)
    report = case.task.evaluate(case.train)
    s = report.summary()
    assert phrase in s and f"on {len(case.train)} " in s, s
    assert report.intervals, report.metrics
    html_ = report._repr_html_()
    assert s.split(" (")[0] in html_


# ---------------------------------------------------------------------- model and data cards
def test_save_writes_a_model_card_without_any_training_text(tmp_path):
    case = tiny_text(tmp_path)
    clf = case.task
    secret = [f"the product was very good number{i} really" for i in range(12)]
    train = text_train_frame(24)
    train.loc[:11, "text"] = secret
    clf.fine_tune(train, eval_data=text_train_frame(8), epochs=2, progress=False, output_dir=tmp_path / "run")
    clf.evaluate(text_train_frame(30))
    folder = clf.save(tmp_path / "saved")
    card = json.loads((folder / "appkit.json").read_text())["model_card"]
    readme = (folder / "README.md").read_text()
    for key in ("intended_use", "base_model", "licence", "training", "evaluation", "data", "limitations"):
        assert card[key], key
    assert card["data"]["rows"] == {"train": 24, "evaluation": 8}
    assert card["data"]["labels"]["train"] == {"positive": 12, "negative": 12}
    assert card["data"]["fingerprint"] == card["training"]["data_fingerprint"]
    assert set(card["data"]["inputs"]) == {"characters", "words"} and card["data"]["inputs"]["words"]["max"] == 7
    assert card["evaluation"]["intervals"]["accuracy"][0] <= card["evaluation"]["metrics"]["accuracy"]
    assert "## Data card" in readme and "95% interval" in readme and "No training example is stored" in readme
    # no training sentence anywhere in the saved folder, in any file, text or binary
    for f in folder.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not any(s.encode() in data for s in secret), f.name
    # on request, examples are included
    with_ex = clf.save(tmp_path / "with-examples", include_examples=True)
    assert secret[0] in (with_ex / "README.md").read_text()


def test_card_survives_a_reload_and_resave(tmp_path):
    import appkit

    case = tiny_text(tmp_path)
    case.task.fine_tune(text_train_frame(), epochs=1, progress=False, output_dir=tmp_path / "run")
    first = json.loads((case.task.save(tmp_path / "a") / "appkit.json").read_text())["model_card"]
    again = appkit.load("text-classification", tmp_path / "a")
    second = json.loads((again.save(tmp_path / "b") / "appkit.json").read_text())["model_card"]
    assert second["data"] == first["data"] and second["base_model"] == first["base_model"]


def test_data_card_summarises_images_and_audio(tmp_path):
    from appkit.report import describe_inputs

    from ..conftest import make_colour_images, make_tones

    imgs = make_colour_images(tmp_path / "im", n=4, size=40)
    d = describe_inputs("image", imgs["image"])
    assert d["width_px"]["max"] == 40 and d["unreadable"] == 0
    clips = make_tones(tmp_path / "au", n=3, seconds=1.5)
    a = describe_inputs("audio", clips["audio"])
    assert a["duration_s"]["median"] == pytest.approx(1.5) and a["total_minutes"] == pytest.approx(0.1, abs=0.01)


def test_compare_has_a_value_in_every_cell_of_the_majority_column(evaluated):
    """The quickstart's table showed NaN for the baseline's calibration and ROC-AUC: the majority answer is
    now a model that gives the label shares as its scores (calibrated, ranks nothing)."""
    import appkit

    clf, test, report = evaluated
    table = appkit.compare({"fine-tuned": report})
    base = [c for c in table.columns if c.startswith("always ")]
    assert len(base) == 1
    column = table[base[0]]
    assert not column.isna().any(), column
    refs = [str(v) for v in report.table["reference"]]
    top_share = pd.Series(refs).value_counts(normalize=True).iloc[0]
    assert column["accuracy"] == pytest.approx(top_share)
    assert column["calibration_error"] == pytest.approx(0.0, abs=1e-9)   # it says its share, and is right that often
    if "roc_auc" in column:
        assert column["roc_auc"] == pytest.approx(0.5)
    assert list(table.index[:3]) == ["accuracy", "macro_f1", "calibration_error"]
