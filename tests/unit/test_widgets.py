"""The notebook widgets, built and driven from Python: click Stop mid-training, type and upload in the demo,
filter / sort / page the error browser and move its threshold. (tests/browser/ checks how they render.)"""
from __future__ import annotations

import re

import numpy as np
import pytest
from transformers import TrainerCallback

from appkit.widgets import demo, explore
from appkit.widgets._static import fallback_html
from appkit.widgets.browse import threshold_stats
from appkit.widgets.progress import LiveTraining, TerminalProgress, in_notebook

from ..conftest import text_train_frame, tiny_image, tiny_speech, tiny_text, tiny_translation


class _ClickStopAt(TrainerCallback):
    """Plays the user: clicks the widget's Stop button when training reaches ``step``."""

    def __init__(self, live, step):
        self.live, self.at = live, step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.at:
            self.live.stop.click()


def test_stop_button_ends_training_at_the_next_step_and_returns_a_normal_run(tmp_path):
    clf = tiny_text(tmp_path).task
    live = LiveTraining(metric="macro_f1", show=False)
    run = clf.fine_tune(text_train_frame(48), eval_data=text_train_frame(8), epochs=10, batch_size=8, progress=False,
                        callbacks=[_ClickStopAt(live, 3), live], output_dir=tmp_path / "run",
                        checkpoints=False)
    assert not in_notebook()
    assert run.history["step"].max() == 3 < live.max_steps == 60
    assert not run.interrupted and "macro_f1" in run.metrics          # evaluated as usual after the stop
    assert live.stopped_by_user and live.stop.disabled and live.stop.description == "Stopped"
    assert "Stopped with the Stop button at step 3 of 60" in live.summary_html
    assert re.search(r'<img alt="[^"]+" src="data:image/png;base64,', live.summary_html)
    assert live.chart.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert live.eval_points and "macro_f1" in live.eval_points[-1]


def test_a_run_without_validation_data_shows_no_empty_validation_table():
    live = LiveTraining(metric="loss", show=False)
    assert live._table_html() == ""
    live.eval_points.append({"epoch": 1.0, "loss": 0.5})
    assert "validation loss" in live._table_html() and "0.5000" in live._table_html()


def test_live_status_counts_epochs_steps_and_time_left():
    live = LiveTraining(metric="accuracy", show=False)
    live.max_steps, live.epochs, live.step = 100, 5, 40
    live.started -= 20        # 20 s for 40 steps -> 30 s for the 60 left
    line = live.status_line()
    assert "epoch 2.0 / 5" in line and "step 40 / 100" in line and "elapsed 0:20" in line and "about 0:30 left" in line


def test_terminal_shows_one_line_per_epoch_and_no_raw_dicts(tmp_path, capsys):
    clf = tiny_text(tmp_path).task
    clf.fine_tune(text_train_frame(), eval_data=text_train_frame(8), epochs=2, output_dir=tmp_path / "run")
    out = capsys.readouterr()
    text = out.out + out.err
    lines = [ln for ln in re.split(r"[\r\n]", text) if re.match(r"\s*epoch \d/2 ", ln)]
    assert len(lines) == 2 and "validation loss" in lines[0] and "macro_f1" in lines[0], text[-800:]
    assert "{'loss'" not in text and "'grad_norm'" not in text
    assert isinstance(TerminalProgress(metric="loss"), TrainerCallback)


def test_text_demo_shows_the_prediction_bars_and_a_mistake_as_a_message(tmp_path):
    clf = tiny_text(tmp_path).task
    d = demo(clf)
    d.text.value = "great product for $5"
    d.button.click()
    expected = clf.predict("great product for $5")
    assert f"<b>{expected['label']}</b>" in d.result.value and f"{expected['score']:.1%}" in d.result.value
    assert d.result.value.count("background:#0072B2") == 2          # one bar per class
    copy = fallback_html(d.title, d.static_body())     # what a reopened notebook shows in the widget's place
    assert "great product for <span>$</span>5" in copy and f"<b>{expected['label']}</b>" in copy
    d.text.value = "   "
    d.button.click()                                                   # no exception reaches the notebook
    assert "DataError" in d.result.value and "empty text" in d.result.value


def _upload(data: bytes, name: str, mime: str) -> tuple:
    from datetime import datetime, timezone

    return ({"name": name, "type": mime, "size": len(data), "content": memoryview(data),
             "last_modified": datetime.now(timezone.utc)},)


def test_image_demo_shows_the_upload_and_its_label_or_the_error(tmp_path):
    case = tiny_image(tmp_path)
    d = demo(case.task)
    data = open(case.inputs[0], "rb").read()
    d.upload.value = _upload(data, "red_0.jpg", "image/jpeg")
    assert d.media.value == data and d.media.layout.display is None
    assert case.task.predict(case.inputs[0])["label"] in d.result.value
    d.upload.value = _upload(b"This is a text file with a .jpg name.\n", "oops.jpg", "image/jpeg")
    assert "not an image" in d.result.value


def test_audio_demo_plays_the_upload_and_writes_the_transcript(tmp_path):
    case = tiny_speech(tmp_path)
    d = demo(case.task)
    data = open(case.inputs[0], "rb").read()
    d.upload.value = _upload(data, "yes_0.wav", "audio/wav")
    assert d.media.value == data and d.media.format == "wav"
    assert case.task.predict(case.inputs[0])["text"].strip()[:5] in d.result.value


def test_translation_demo(tmp_path):
    case = tiny_translation(tmp_path)
    d = demo(case.task)
    assert d.button.description == "Translate"
    d.text.value = "yes"
    d.button.click()
    assert case.task.predict("yes")["translation"][:5] in d.result.value.replace("&#x27;", "'")


def test_error_browser_filters_sorts_pages_and_moves_the_threshold(tmp_path):
    clf = tiny_text(tmp_path).task
    clf.fine_tune(text_train_frame(), epochs=3, progress=False, output_dir=tmp_path / "run", learning_rate=0.02)
    test = text_train_frame(40)
    test["shop"] = ["north" if i % 4 else "south" for i in range(40)]
    report = clf.evaluate(test, slice_by="shop")
    t = report.table
    e = explore(report, page_size=4)
    n_err = int((~t.correct).sum())
    assert e.which.value == ("errors" if n_err else "all")
    e.which.value = "all"
    assert e.position.value == "items 1-4 of 40" and e.prev.disabled
    e.next.click()
    assert e.position.value == "items 5-8 of 40" and not e.prev.disabled
    e.sort.value = "most confident first"                      # resets to page one
    assert e.position.value == "items 1-4 of 40"
    assert e.selection()["score"].iloc[0] == t["score"].max()
    assert f"confidence {t['score'].max():.1%}" in e.items.value
    e.true_label.value = "negative"
    assert len(e.selection()) == int((t.reference == "negative").sum())
    e.true_label.value = "(all)"
    e.slice.value = "shop=south"
    assert e.position.value == "items 1-4 of 10"
    # threshold: precision / recall / cost agree with a direct count, and follow the slider and the costs
    y = (t.reference == "positive").to_numpy()
    p = np.array([s["positive"] for s in t.scores])
    e.threshold.value = 0.4
    e.cost_fn.value = 5.0
    want = threshold_stats(y, p, 0.4, cost_fp=1.0, cost_fn=5.0)
    assert e.current_stats()["cost"] == want["cost"] == want["false_positives"] + 5 * want["false_negatives"]
    assert f"{want['false_negatives']} false negatives" in e.stats.value
    e.threshold.value = 0.99
    assert e.current_stats()["recall"] <= want["recall"]


def test_error_browser_shows_audio_players_and_translations(tmp_path):
    case = tiny_speech(tmp_path)
    report = case.task.evaluate(case.train)
    e = explore(report)
    e.which.value = "all"
    assert '<audio controls preload="none" src="data:audio/wav;base64,' in e.items.value
    mt = tiny_translation(tmp_path)
    e2 = explore(mt.task.evaluate(mt.train))
    e2.which.value = "all"
    assert "<b>source</b>: yes" in e2.items.value and "chrF" in e2.items.value


def test_tune_shows_each_trial_as_it_finishes(tmp_path, capsys):
    from appkit.widgets.progress import TrialDisplay

    clf = tiny_text(tmp_path).task
    result = clf.tune(text_train_frame(), n_trials=2, space={"learning_rate": ("log", 1e-3, 1e-2), "epochs": ("int", 1, 2)})
    text = capsys.readouterr()
    lines = [ln for ln in (text.out + text.err).splitlines() if ln.startswith("trial ")]
    assert [ln.split(":")[0] for ln in lines] == ["trial 1/2", "trial 2/2"] and "(best " in lines[1]
    assert f"{result.best_value:.4f}" in lines[-1] or f"{result.best_value:.4f}" in lines[0]
    shown = TrialDisplay(metric="macro_f1", direction="maximize", n_trials=2, show=False)
    shown.rows = [{"trial": 0, "macro_f1": 0.5, "learning_rate": 0.001}, {"trial": 1, "macro_f1": 0.7, "learning_rate": 0.01}]
    page = shown._render(1)
    assert "2 of 2 trials done, best is trial 1" in page and "data:image/png;base64," in page
    # when the search ends the live output keeps its plot and drops its table: the TuneResult shows it once
    updates = []
    shown._handle = type("Handle", (), {"update": lambda self, obj: updates.append(obj.data)})()
    shown.finish()
    assert len(updates) == 1 and "best is trial 1" in updates[0] and "data:image/png;base64," in updates[0]
    assert "<table" not in updates[0] and "<table" in shown._render(1)


def test_widgets_are_displayed_after_a_static_copy_that_follows_what_they_show(tmp_path, monkeypatch):
    """A reopened notebook has no widget state: the static HTML copy displayed before each widget is what it shows."""
    import IPython.display

    shown, updates = [], []

    class Handle:
        def update(self, obj):
            updates.append(obj.data)

    def fake_display(obj, *, raw=False, display_id=None):
        shown.append(obj if raw else obj.data)
        return Handle() if display_id else None

    monkeypatch.setattr(IPython.display, "display", fake_display)
    clf = tiny_text(tmp_path).task
    e = explore(clf.evaluate(text_train_frame(12)), page_size=2)
    e.which.value = "all"
    e._ipython_display_()
    copy, bundle = shown
    assert 'class="appkit-static' in copy and "items 1-2 of 12" in copy and "Error browser" in copy
    assert "application/vnd.jupyter.widget-view+json" in bundle and "VBox" not in bundle["text/plain"]
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == e.widget.model_id
    e.next.click()
    assert "items 3-4 of 12" in updates[-1]
    d = demo(clf)
    d._ipython_display_()
    assert "Nothing tried yet" in shown[2]
    d.text.value = "it cost $8/month"
    d.button.click()
    assert "it cost <span>$</span>8/month" in updates[-1] and "sure)" in updates[-1]
