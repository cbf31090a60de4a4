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
            "bare = [m for m in ('torch', 'transformers', 'datasets', 'pandas') if m in sys.modules]; "
            "appkit.list_tasks(); appkit.list_models(); "   # the catalogue is a DataFrame: pandas, nothing heavier
            "bad = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; "
            "print(dt, bare, bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(maxsplit=1)
    assert float(out[0]) < 0.5
    assert out[1].strip() == "[] []"


def test_list_tasks_and_models():
    assert "text-classification" in appkit.list_tasks()
    rows = appkit.list_models("text-classification")       # a DataFrame: it renders as a table in Jupyter
    assert {"name", "task", "source", "licence", "size", "offline", "default"} <= set(rows.columns)
    assert set(rows.task) == {"text-classification"}
    row = rows.set_index("name").loc["minilm-l6"]
    assert row["default"] and row["offline"]                 # installed by the set-up
    assert rows.iloc[0]["name"] == "minilm-l6"               # the default is listed first
    assert not rows.set_index("name").loc["xlm-roberta-base", "offline"]   # a hub model needs a download
    assert len(appkit.list_models()) > len(rows)


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
