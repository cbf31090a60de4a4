"""The fine-tune engine: interruption and resume, tuning, class weights, history."""
from __future__ import annotations

import pytest

import appkit
from appkit.training import TuneResult

from ..conftest import make_tiny_bert_folder, text_train_frame


@pytest.fixture
def clf(tmp_path):
    return appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "bert"))


@pytest.mark.parametrize("strategy", ["head", "top"])
def test_interrupted_training_keeps_its_work_and_resumes(strategy, clf, tmp_path):
    from transformers import TrainerCallback

    class StopAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                raise KeyboardInterrupt  # what the notebook's stop button does

    import transformers

    original = transformers.Trainer.__init__

    def patched(self, *a, callbacks=None, **kw):
        original(self, *a, callbacks=[*(callbacks or []), StopAtStep()], **kw)

    train = text_train_frame(48)
    out = tmp_path / "run"
    transformers.Trainer.__init__ = patched
    try:
        with pytest.warns(UserWarning, match="interrupted at step 5.*resume=True"):
            run = clf.fine_tune(train, strategy=strategy, epochs=4, batch_size=8, output_dir=out, progress=False)
    finally:
        transformers.Trainer.__init__ = original
    assert run.interrupted
    assert (out / "checkpoint-5").is_dir()
    # a new kernel: the features come back from the run folder ("top": one [tokens, hidden] tensor per text)
    again = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "bert"))
    resumed = again.fine_tune(train, strategy=strategy, epochs=4, batch_size=8, output_dir=out, resume=True, progress=False)
    assert not resumed.interrupted
    assert resumed.history["step"].max() == 24          # 48 / 8 * 4 steps in all
    assert resumed.resumed_from_step == 5               # started where it stopped
    assert resumed.history["step"].is_unique


def test_tune_returns_trials_and_settings_fine_tune_accepts(tmp_path):
    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "b"), labels=["negative", "positive"])
    train = text_train_frame(40)
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    result = clf.tune(train, n_trials=3, strategy="head", space={"learning_rate": ("log", 1e-3, 1e-1), "epochs": ("int", 2, 4)})
    assert isinstance(result, TuneResult) and len(result.trials) == 3
    assert {"macro_f1", "learning_rate", "epochs", "duration"} <= set(result.trials.columns)
    assert set(result.best_params) == {"learning_rate", "epochs"}
    after = clf.model.state_dict()
    assert all((before[k] == after[k]).all() for k in before if before[k].shape == after[k].shape)
    run = clf.fine_tune(train, strategy="head", progress=False, **result.best_params)
    assert run.params["learning_rate"] == result.best_params["learning_rate"]
    assert "<table" in result._repr_html_()


def test_class_weights_lift_small_classes(clf):
    clf.labels = ["a", "b"]
    assert clf._class_weights([0, 0, 0, 1], balance="balanced")[1] == pytest.approx(3 * clf._class_weights([0, 0, 0, 1], balance="balanced")[0])
    w = clf._class_weights([0, 0, 0, 1])     # "auto": the square root of full balancing
    assert w[1] == pytest.approx(3 ** 0.5 * w[0])


def test_early_stopping_and_validation_split(clf, tmp_path):
    run = clf.fine_tune(text_train_frame(40), strategy="head", epochs=30, validation_split=0.25,
                        early_stopping_patience=1, learning_rate=1e-5, output_dir=tmp_path / "r", progress=False)
    assert run.history["epoch"].max() < 30    # stopped early: the tiny learning rate gets nowhere
    assert "eval_macro_f1" in run.history
    ax = run.plot()
    assert ax.get_xlabel() == "epoch"


def test_checkpoints_can_be_switched_off_to_save_disk(clf, tmp_path):
    clf.fine_tune(text_train_frame(24), strategy="full", epochs=2, checkpoints=False, output_dir=tmp_path / "off",
                  progress=False)
    assert not list((tmp_path / "off").glob("checkpoint-*"))
    clf.fine_tune(text_train_frame(24), strategy="full", epochs=2, output_dir=tmp_path / "on", progress=False)
    assert len(list((tmp_path / "on").glob("checkpoint-*"))) == 2


def test_auto_strategy_says_what_it_picked_and_why(clf, tmp_path):
    from appkit.training import AUTO_FULL_MIN_ROWS, _choose_strategy

    run = clf.fine_tune(text_train_frame(24), progress=False, output_dir=tmp_path / "r")
    assert run.strategy == "probe" and run.notes[0].startswith("strategy 'probe' (auto: no GPU")
    run = clf.fine_tune(text_train_frame(24), epochs=1, progress=False, output_dir=tmp_path / "r")
    assert run.strategy == "head" and run.notes[0].startswith("strategy 'head' (auto: you set epochs")
    clf.device = "cuda"          # what the rule sees on a GPU (nothing runs here)
    few, why = _choose_strategy(clf, "auto", rows=AUTO_FULL_MIN_ROWS - 1)
    assert few == "probe" and f"{AUTO_FULL_MIN_ROWS - 1} training rows, fewer than {AUTO_FULL_MIN_ROWS}" in why
    assert _choose_strategy(clf, "auto", rows=AUTO_FULL_MIN_ROWS - 1, loop_settings=["epochs"])[0] == "head"
    assert _choose_strategy(clf, "auto", rows=AUTO_FULL_MIN_ROWS)[0] == "full"
    assert _choose_strategy(clf, "full", rows=10) == ("full", "strategy 'full', as asked")


def test_tune_computes_the_features_once_for_all_trials(tmp_path, monkeypatch):
    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "b"), labels=["negative", "positive"])
    calls = []
    real = type(clf)._features
    monkeypatch.setattr(type(clf), "_features", lambda self, batch: calls.append(len(batch["input_ids"])) or real(self, batch))
    clf.tune(text_train_frame(40), n_trials=4, strategy="head", space={"epochs": ("int", 1, 3)})
    assert sum(calls) == 40          # 32 training + 8 validation rows, each encoded once for the 4 trials


def test_automatic_validation_split_needs_ten_rows_per_class_held_out(clf):
    import pandas as pd

    from appkit.training import _auto_validation_split

    def frame(per_class):
        return pd.DataFrame({"text": [f"t{i}" for i in range(8 * per_class)], "label": [f"c{i % 8}" for i in range(8 * per_class)]})

    assert _auto_validation_split(clf, frame(30), "head") == 0.0     # clip art: 6 per class would be held out
    assert _auto_validation_split(clf, frame(50), "head") == 0.2     # 10 per class
    assert _auto_validation_split(clf, frame(50), "full") == 0.0     # full fine-tuning: only when asked


def test_checkpoints_take_about_a_tenth_of_the_training_time(monkeypatch):
    """Epochs shorter than ten checkpoint writes are not each checkpointed; the first and last always are,
    and an epoch's evaluation does not count as writing time."""
    from types import SimpleNamespace

    from appkit import training

    clock = [0.0]
    monkeypatch.setattr(training.time, "monotonic", lambda: clock[0])

    def run(epoch_s: float, epochs: int = 8, write_s: float = 0.3, eval_s: float = 0.0, stop: int = 0) -> list[int]:
        budget, state, written = training._CheckpointBudget(), SimpleNamespace(max_steps=epochs, global_step=0), []
        for epoch in range(1, epochs + 1):
            clock[0] += epoch_s
            state.global_step = epoch
            control = SimpleNamespace(should_save=True, should_training_stop=False)
            budget.on_epoch_end(None, state, control)
            clock[0] += eval_s
            control.should_training_stop = epoch == stop          # early stopping decides on the evaluation
            budget.on_evaluate(None, state, control)
            if control.should_save:
                clock[0] += write_s
                budget.on_save(None, state, control)
                written.append(epoch)
            if control.should_training_stop:
                break
        return written

    assert run(1.3) == [1, 4, 7, 8]              # 1.2 s of writing in 11.6 s
    assert run(1.3, eval_s=5.0) == [1, 3, 5, 7, 8]     # evaluating counts as run time, not as writing time
    assert run(10.0) == list(range(1, 9))
    assert run(0.01, epochs=3) == [1, 3]
    assert run(1.3, stop=6) == [1, 4, 6]          # the epoch early stopping ends on
