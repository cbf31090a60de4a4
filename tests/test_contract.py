"""The contract every task keeps (DESIGN.md), run over every registered task.

A new task gets these tests for free once it registers and adds a tiny factory to
tests/conftest.py (TINY); without one, test_every_task_has_a_tiny_factory fails. A task
defined elsewhere (tests/unit/test_toy_task.py) runs the same checks: ``CONTRACT`` lists them,
each taking ``(case, tmp_path)``. Results are compared on every key the task declares
(``result_keys``), so a new key cannot slip by uncompared.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

import appkit
from appkit.errors import AppkitError

from .conftest import TINY

TASKS = appkit.list_tasks()


def same(a, b, tol: float) -> bool:
    """Equal, with numbers (also inside dicts and lists) equal within ``tol``."""
    if isinstance(a, float) or isinstance(b, float):
        return b == pytest.approx(a, abs=tol)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b))
    return a == b


def batch_tolerance(task) -> float:
    """Scores of one input alone vs in a padded batch: float32 agrees to ~1e-6; bf16 rounds at ~1e-2."""
    return 2e-2 if task._use_bf16() else 1e-4


def test_every_task_has_a_tiny_factory():
    assert set(TASKS) <= set(TINY), f"add a tiny factory to tests/conftest.py for {set(TASKS) - set(TINY)}"


@pytest.fixture(params=TASKS)
def case(request, tmp_path):
    return TINY[request.param](tmp_path)


def test_single_item_and_list_give_the_same_result(case, tmp_path):
    keys = set(case.task.result_keys)
    one = case.task.predict(case.inputs[0])
    many = case.task.predict(case.inputs)
    assert isinstance(one, dict) and keys <= set(one)
    assert isinstance(many, list) and len(many) == len(case.inputs)
    assert all(keys <= set(r) for r in many)
    assert many[0].keys() == one.keys()
    for k in keys:      # every declared key, numbers within the batch tolerance
        assert same(one[k], many[0][k], batch_tolerance(case.task)), (k, one[k], many[0][k])
    # a model that answers a constant (inputs ignored) passes every check above: different inputs differ
    answers = [repr({k: r[k] for k in sorted(keys)}) for r in many]
    assert len(set(answers)) > 1, answers


def test_dataframe_column_gets_prediction_columns_and_stays_unchanged(case, tmp_path):
    df = pd.DataFrame({"my_input": case.inputs, "other": range(len(case.inputs))})
    before = df.copy()
    out = case.task.predict(df, column="my_input")
    pd.testing.assert_frame_equal(df, before)
    assert list(out.columns) == ["my_input", "other", *(f"pred_{k}" for k in case.task.frame_keys)]
    assert len(out) == len(df)


def test_fine_tune_returns_run_with_history_then_save_load_is_identical(case, tmp_path):
    run = case.task.fine_tune(case.train, epochs=2, output_dir=tmp_path / "run", progress=False)
    assert isinstance(run.history, pd.DataFrame) and len(run.history) > 0
    assert {"step", "epoch", "train_loss"} <= set(run.history.columns)
    assert run.history["train_loss"].notna().any()
    before = case.task.predict(case.inputs)
    folder = case.task.save(tmp_path / "saved")
    meta = json.loads((folder / "appkit.json").read_text())
    assert meta["task"] == case.task.task and "appkit_version" in meta
    assert any(p.suffix == ".safetensors" for p in folder.iterdir())
    assert not any(p.suffix in (".bin", ".pkl", ".pt", ".pth") for p in folder.iterdir())
    again = appkit.load(case.task.task, folder).predict(case.inputs)
    for a, b in zip(before, again):
        for k in case.task.result_keys:      # the same batches before and after: the same numbers
            assert same(a[k], b[k], 1e-4), (k, a[k], b[k])


def test_evaluate_reports_the_task_metrics_and_renders(case, tmp_path):
    report = case.task.evaluate(case.train.head(8))
    assert case.metric_keys <= set(report.metrics)
    assert all(isinstance(v, float) for v in report.metrics.values())
    html = report._repr_html_()
    assert "<table" in html or "<img" in html
    path = report.to_html(tmp_path / "r.html")
    assert path.read_text().startswith("<!DOCTYPE html>")


def test_inputs_past_the_held_budget_are_read_again_with_the_same_results(case, tmp_path):
    """A call keeps at most ``held_inputs_mb`` of checked inputs; past it they are preprocessed again at batch
    time (10,000 images, hours of audio): the results must not change, only the memory."""
    keys = sorted(case.task.result_keys)
    kept = case.task.predict(case.inputs)
    case.task.held_inputs_mb = 0            # every input past the budget
    again = case.task.predict(case.inputs)
    for a, b in zip(kept, again):
        for k in keys:
            assert same(a[k], b[k], 1e-6), (k, a[k], b[k])


def test_bad_input_raises_appkit_error_naming_the_problem(case, tmp_path):
    with pytest.raises(AppkitError, match=case.bad_match):
        case.task.predict(case.bad_input)
    with pytest.raises(AppkitError, match="(?i)input 1"):
        case.task.predict([case.inputs[0], case.bad_input])


def test_errors_skip_keeps_every_good_item(case, tmp_path):
    with pytest.warns(UserWarning, match="Skipped 1 of 3"):
        out = case.task.predict([case.inputs[0], case.bad_input, case.inputs[1]], errors="skip")
    assert out[1] is None and out[0] is not None and out[2] is not None
    assert [i for i, _ in out.skipped] == [1] and case.task.skipped == out.skipped   # on the result, and set once


def test_missing_column_is_named_with_the_fix(case, tmp_path):
    df = case.train.rename(columns={case.input_column: "something_else"})
    with pytest.raises(AppkitError, match=f"no '{case.input_column}' column.*columns="):
        case.task.fine_tune(df, epochs=1, progress=False)
    # and the mapping the message suggests works
    run = case.task.fine_tune(df, epochs=1, columns={"something_else": case.input_column}, progress=False)
    assert len(run.history)


def test_unknown_options_and_names_list_the_valid_ones(case, tmp_path):
    with pytest.raises(AppkitError, match="Available"):
        case.task.predict(case.inputs[0], no_such_option=1)
    with pytest.raises(AppkitError, match="strategy"):
        case.task.fine_tune(case.train, strategy="magic", progress=False)
    with pytest.raises(AppkitError, match="errors mode"):
        case.task.predict(case.inputs, errors="ignore")


# every check above, for a task defined outside appkit (tests/unit/test_toy_task.py runs them on its own case)
CONTRACT = [test_single_item_and_list_give_the_same_result, test_dataframe_column_gets_prediction_columns_and_stays_unchanged,
            test_fine_tune_returns_run_with_history_then_save_load_is_identical, test_evaluate_reports_the_task_metrics_and_renders,
            test_inputs_past_the_held_budget_are_read_again_with_the_same_results,
            test_bad_input_raises_appkit_error_naming_the_problem, test_errors_skip_keeps_every_good_item,
            test_missing_column_is_named_with_the_fix, test_unknown_options_and_names_list_the_valid_ones]
