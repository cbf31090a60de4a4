"""The package surface: cheap import, registry, catalogue, error wording."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

import appkit
from appkit.errors import AppkitError, UnknownNameError


def test_import_is_cheap_and_loads_no_torch():
    code = ("import sys, time; t = time.perf_counter(); import appkit; dt = time.perf_counter() - t; "
            "appkit.list_tasks(); appkit.list_models(); "
            "bad = [m for m in ('torch', 'transformers', 'datasets', 'pandas') if m in sys.modules]; "
            "print(dt, bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(maxsplit=1)
    assert float(out[0]) < 0.5
    assert out[1].strip() == "[]"


def test_list_tasks_and_models():
    assert "text-classification" in appkit.list_tasks()
    rows = appkit.list_models("text-classification")
    names = {r["name"] for r in rows}
    assert "minilm-l6" in names
    row = next(r for r in rows if r["name"] == "minilm-l6")
    assert {"name", "task", "source", "licence", "size", "offline"} <= set(row) and row["default"]


def test_unknown_task_suggests_the_right_one():
    with pytest.raises(UnknownNameError, match=re.escape("Unknown task 'text'. Available: [")) as e:
        appkit.load("text")
    assert "Did you mean 'text-classification'?" in str(e.value)
    with pytest.raises(AppkitError, match="Did you mean 'text-classification'"):
        appkit.list_models("text-clasification")


def test_unknown_model_name_lists_the_catalogue():
    with pytest.raises(AppkitError, match=r"Unknown text-classification model \(or folder\) 'minilm'.*Did you mean 'minilm-l6'"):
        appkit.load("text-classification", "minilm")


def test_unknown_load_option_is_named():
    with pytest.raises(AppkitError, match="label_description"):
        appkit.load("text-classification", labels=["a", "b"], label_description={})
