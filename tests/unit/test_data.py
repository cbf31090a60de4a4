"""Input handling and pre-flight checks: every user mistake gets a message that says what, where and how."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from appkit.data import apply_columns, check_labels, read_table, train_test_split, warn_shared_duplicates
from appkit.errors import DataError


def test_read_table_accepts_frames_lists_datasets_csv_jsonl(tmp_path):
    import datasets

    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}]
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    for src in (df, rows, datasets.Dataset.from_list(rows), tmp_path / "d.csv", str(tmp_path / "d.jsonl")):
        got = read_table(src, where="training data")
        assert got[["text", "label"]].to_dict("records") == rows


def test_read_table_errors():
    with pytest.raises(DataError, match="does not exist"):
        read_table("nope.csv", where="training data")
    with pytest.raises(DataError, match=re.escape("item 1 is a str, not a dict")):
        read_table([{"text": "a"}, "b"], where="training data")
    with pytest.raises(DataError, match="empty list"):
        read_table([], where="training data")
    with pytest.raises(DataError, match="unsupported type int"):
        read_table(3, where="training data")


def test_missing_column_names_the_columns_and_the_fix():
    df = pd.DataFrame({"body": ["a"], "label": ["x"]})
    with pytest.raises(DataError, match=re.escape("has no 'text' column. Where: its columns are ['body', 'label']")) as e:
        apply_columns(df, required=["text", "label"], columns=None, where="training data")
    assert "columns={'<your column>': 'text'}" in str(e.value)
    assert list(apply_columns(df, required=["text", "label"], columns={"body": "text"}, where="d").columns) == ["text", "label"]
    with pytest.raises(DataError, match="columns= names \\['bdy'\\]"):
        apply_columns(df, required=["text"], columns={"bdy": "text"}, where="d")


def test_label_checks():
    with pytest.raises(DataError, match="single label 'a'"):
        check_labels(["a", "a"])
    with pytest.raises(DataError, match=re.escape("['b'] have fewer than 2 examples")):
        check_labels(["a", "a", "b"])
    with pytest.raises(DataError, match="Row 1 .* has no label"):
        check_labels(["a", None, "b"])
    assert check_labels(["b", "a", "a", "b"]) == ["a", "b"]


def test_stratified_split_keeps_every_class():
    df = pd.DataFrame({"text": [f"t{i}" for i in range(40)], "label": ["a"] * 30 + ["b"] * 10})
    tr, te = train_test_split(df, test_size=0.25, seed=1)
    assert len(te) == 10 and set(te.label) == {"a", "b"} and (te.label == "b").sum() in (2, 3)
    assert not set(tr.text) & set(te.text)
    with pytest.raises(DataError, match="only 1 example"):
        train_test_split(pd.DataFrame({"text": ["a", "b", "c"], "label": ["x", "x", "y"]}))


def test_shared_duplicates_warn():
    with pytest.warns(UserWarning, match="2 texts appear in both"):
        assert warn_shared_duplicates(["a", "b", "c"], ["b", "c", "d"]) == 2
