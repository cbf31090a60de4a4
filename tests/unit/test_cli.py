"""The `appkit` command line on tiny random models built in the test.

Most calls run `main([...])` in this process (seconds); the exit codes, the one-line errors and the
stdout/stderr split are checked on real `python -m appkit.cli` subprocesses.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import appkit
from appkit.cli import main

from ..conftest import (make_colour_images, make_tiny_bert_folder, make_tiny_lite_folder, make_tiny_whisper_folder,
                        make_tones, text_train_frame)

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "appkit.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture
def text_model(tmp_path) -> Path:
    """A saved tiny text classifier that knows its labels (zero-shot, as a saved model before fine-tuning is)."""
    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "bert"), labels=["negative", "positive"])
    return clf.save(tmp_path / "model")


def test_help_names_every_command_examples_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("predict", "fine-tune", "evaluate", "serve", "export", "models", "demo", "exit codes", "3  data"):
        assert word in out
    for cmd in ("predict", "fine-tune", "evaluate", "serve", "export"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "examples:" in capsys.readouterr().out
    assert main(["models", "--task", "text-classification"]) == 0
    assert "minilm-l6" in capsys.readouterr().out


def test_predict_texts_files_and_tables(text_model, tmp_path, capsys):
    clf = appkit.load("text-classification", str(text_model))
    texts = ["good great product", "awful drug", "it is fine"]
    expected = [r["label"] for r in clf.predict(texts)]

    assert main(["predict", str(text_model), *texts]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows] == texts and [r["label"] for r in rows] == expected
    assert set(rows[0]["scores"]) == {"negative", "positive"}

    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n\n")   # blank lines are not texts
    assert main(["predict", str(text_model), str(tmp_path / "texts.txt"), "--output", str(tmp_path / "p.jsonl")]) == 0
    assert [json.loads(x)["label"] for x in (tmp_path / "p.jsonl").read_text().splitlines()] == expected

    pd.DataFrame({"id": [7, 8, 9], "body": texts}).to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    out_csv = tmp_path / "out" / "p.csv"
    assert main(["predict", str(text_model), str(tmp_path / "in.jsonl"), "--column", "body", "--output", str(out_csv)]) == 0
    table = pd.read_csv(out_csv)
    assert list(table.columns) == ["id", "body", "pred_label", "pred_score", "pred_scores"]
    assert list(table.id) == [7, 8, 9] and list(table.pred_label) == expected
    assert json.loads(table.pred_scores[0]).keys() == {"negative", "positive"}
    assert "wrote 3 rows" in capsys.readouterr().err


def test_predict_folder_of_images(tmp_path, capsys):
    make_colour_images(tmp_path / "photos" / "batch1", n=4)
    assert main(["predict", make_tiny_lite_folder(tmp_path / "lite"), str(tmp_path / "photos"), "--task",
                 "image-classification", "--top-k", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4 and all(r["label"] in ("red", "blue") and len(r["scores"]) == 1 for r in rows)
    assert rows[0]["input"].endswith(".jpg")


def test_predict_folder_of_audio_to_csv(tmp_path, capsys):
    make_tones(tmp_path / "calls", n=2)
    whisper = make_tiny_whisper_folder(tmp_path / "whisper")
    assert main(["predict", whisper, str(tmp_path / "calls"), "--task", "speech-recognition",
                 "--output", str(tmp_path / "t.csv")]) == 0
    table = pd.read_csv(tmp_path / "t.csv", keep_default_na=False)
    assert list(table.columns) == ["input", "text"] and len(table) == 2 and table.input[0].endswith(".wav")


def test_fine_tune_then_evaluate_with_report(tmp_path, capsys):
    text_train_frame(24).rename(columns={"text": "body"}).to_csv(tmp_path / "train.csv", index=False)
    text_train_frame(8).to_csv(tmp_path / "test.csv", index=False)
    bert = make_tiny_bert_folder(tmp_path / "bert", init=0.2)
    code = main(["fine-tune", "text-classification", "--model", bert, "--train", str(tmp_path / "train.csv"),
                 "--columns", "body=text", "--out", str(tmp_path / "m"), "--epochs", "2", "--runs", str(tmp_path / "runs")])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])   # stdout: only the result
    assert result["strategy"] == "head" and Path(result["model"]).name == "m"
    assert appkit.load("text-classification", str(tmp_path / "m")).labels == ["negative", "positive"]

    report = tmp_path / "r" / "report.html"
    assert main(["evaluate", str(tmp_path / "m"), str(tmp_path / "test.csv"), "--report", str(report)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 <= metrics["accuracy"] <= 1 and "macro_f1" in metrics
    assert "<html" in report.read_text()[:2000].lower() and "macro" in report.read_text()


def test_usage_mistakes_exit_2_before_loading_a_model(tmp_path, text_model, capsys):
    assert main(["predict", "minlm-l6", "text"]) == 2
    assert "Did you mean 'minilm-l6'?" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["predict", str(tmp_path / "plain"), "x"]) == 2
    assert "pass --task" in capsys.readouterr().err
    assert main(["predict", str(text_model), "x", "--output", "p.xlsx"]) == 2
    assert "must end in one of ['.jsonl', '.csv']" in capsys.readouterr().err
    assert main(["export", "text-classification"]) == 2
    assert "pass --output DIR" in capsys.readouterr().err
    assert main(["predict", str(text_model), "a.csv", "b.csv"]) == 2
    assert "one table file at a time" in capsys.readouterr().err
    assert main(["predict", str(text_model), "reveiws.csv"]) == 3      # a typo is not a text to classify
    assert "'reveiws.csv' does not exist" in capsys.readouterr().err


def test_exit_codes_and_one_line_errors_in_a_real_process(tmp_path, text_model):
    pd.DataFrame({"review": ["good"]}).to_csv(tmp_path / "in.csv", index=False)
    data = cli("predict", str(text_model), "in.csv", cwd=tmp_path)
    assert data.returncode == 3 and data.stdout == ""
    err = [line for line in data.stderr.splitlines() if line.startswith("appkit: error:")]
    assert err == ["appkit: error: The input file 'in.csv' has no column 'text'. Where: its columns are ['review']. "
                   "How to fix: pass --column <the column holding the inputs>."]
    assert "Traceback" not in data.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "appkit.json").write_text(json.dumps({"task": "text-classification"}))
    model = cli("predict", str(broken), "hello", cwd=tmp_path)
    assert model.returncode == 4 and "appkit: error: Could not load" in model.stderr and "Traceback" not in model.stderr

    debug = cli("predict", str(text_model), "in.csv", "--debug", cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "DataError" in debug.stderr
