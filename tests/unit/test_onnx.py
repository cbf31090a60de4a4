"""ONNX export of tiny text and image classifiers: onnxruntime must reproduce torch (float32) and
appkit.load(..., backend="onnx") must predict through the file."""
from __future__ import annotations

import json
import re
import shutil

import pytest

import appkit
from appkit.cli import main
from appkit.errors import ModelError, NotTrainedError, UnknownNameError

from ..conftest import make_colour_images, make_tiny_bert_folder, make_tiny_lite_folder, text_train_frame

pytest.importorskip("onnxruntime")

TEXTS = ["good great product", "awful drug", "it is fine", "the worst drug, really broken and sad " * 4]


@pytest.fixture
def trained_text(tmp_path):
    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "bert", init=0.2), precision="float32")
    clf.fine_tune(text_train_frame(), epochs=2, progress=False)
    return clf


def test_text_export_matches_torch_and_loads_as_onnx(trained_text, tmp_path):
    check = trained_text.export_onnx(tmp_path / "onnx")
    print(f"text: onnxruntime vs torch max abs logit difference {check['max_abs_diff']:.2e}")
    assert check["max_abs_diff"] < 1e-4 and check["labels_agree"] == 1.0
    assert check["inputs"] == ["input_ids", "token_type_ids", "attention_mask"]
    assert json.loads((tmp_path / "onnx" / "appkit.json").read_text())["onnx"]["max_abs_diff"] == check["max_abs_diff"]

    onnx = appkit.load("text-classification", str(tmp_path / "onnx"), backend="onnx")
    assert onnx.backend == "onnx"
    got, want = onnx.predict(TEXTS), trained_text.predict(TEXTS)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want)) < 1e-4
    with pytest.raises(ModelError, match="cannot be fine-tuned"):
        onnx.fine_tune(text_train_frame(), progress=False)


def test_image_export_matches_torch(tmp_path):
    clf = appkit.load("image-classification", make_tiny_lite_folder(tmp_path / "lite"), precision="float32")
    check = clf.export_onnx(tmp_path / "onnx")
    print(f"image: onnxruntime vs torch max abs logit difference {check['max_abs_diff']:.2e}")
    assert check["max_abs_diff"] < 1e-4 and check["labels_agree"] == 1.0
    paths = list(make_colour_images(tmp_path / "img", n=4)["image"])
    onnx = appkit.load("image-classification", str(tmp_path / "onnx"), backend="onnx")
    got, want = onnx.predict(paths), clf.predict(paths)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert max(abs(g["score"] - w["score"]) for g, w in zip(got, want)) < 1e-4


def test_what_cannot_be_exported_or_loaded_says_why(trained_text, tmp_path):
    zero = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "b2"), labels=["a", "b"])
    with pytest.raises(NotTrainedError, match="fine_tune it on labelled data first"):
        zero.export_onnx(tmp_path / "zero")
    folder = trained_text.save(tmp_path / "saved")
    with pytest.raises(ModelError, match=re.escape(f"export it first: appkit export {folder} --format onnx")):
        appkit.load("text-classification", str(folder), backend="onnx")
    with pytest.raises(UnknownNameError, match="Did you mean 'onnx'"):
        appkit.load("text-classification", str(folder), backend="onx")
    trained_text.export_onnx(folder / "onnx")
    stale = shutil.copytree(folder / "onnx", tmp_path / "old-export")
    trained_text.fine_tune(text_train_frame(), epochs=1, progress=False)   # the weights move on ...
    trained_text.save(folder)                                             # ... and are saved, not re-exported:
    assert not (folder / "onnx").exists()        # a save writes a whole new folder, the old export goes with it
    shutil.copytree(stale, folder / "onnx")      # an old export copied back in by hand is still caught
    with pytest.raises(ModelError, match="exported from other weights"):
        appkit.load("text-classification", str(folder), backend="onnx")


def test_cli_export_into_the_model_folder_and_predict_with_onnx(trained_text, tmp_path, capsys):
    folder = trained_text.save(tmp_path / "m")
    assert main(["export", str(folder), "--format", "onnx"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["folder"] == str(folder / "onnx") and out["max_abs_diff"] < 1e-4
    assert main(["predict", str(folder), *TEXTS[:2], "--backend", "onnx"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == [r["label"] for r in trained_text.predict(TEXTS[:2])]
