"""Image classification on tiny random backbones built in the test (seconds, nothing from outside)."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import appkit
from appkit.errors import AppkitError, DataError, MediaError, NotTrainedError
from appkit.media import decode_image
from appkit.tasks.image_classification import _augment

from ..conftest import make_colour_images, make_tiny_lite_folder
from ..fixtures import bad_images


@pytest.fixture
def clf(tmp_path):
    return appkit.load("image-classification", make_tiny_lite_folder(tmp_path / "lite"))


@pytest.fixture
def images(tmp_path):
    return make_colour_images(tmp_path / "img", n=12)


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return bad_images(tmp_path_factory.mktemp("bad"))


def make_tiny_vit_folder(path, labels=("red", "blue")) -> str:
    import torch
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                    patch_size=8, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    ViTForImageClassification(cfg).save_pretrained(path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


# ---------------------------------------------------------------- inputs

def test_every_kind_of_input_gives_the_same_prediction(clf, images):
    path = images.image[0]
    ref = clf.predict(path)
    raw = open(path, "rb").read()
    pil = Image.open(path)
    arr = np.asarray(pil.convert("RGB"))
    for item in (raw, pil, arr, arr.transpose(2, 0, 1), arr.astype(np.float32) / 255, {"bytes": raw, "path": None}):
        assert clf.predict(item)["label"] == ref["label"]
        assert clf.predict(item)["score"] == pytest.approx(ref["score"], abs=0.02)
    batch = clf.predict(np.stack([arr, arr]))          # (N, H, W, C) is a batch
    assert len(batch) == 2 and batch[0]["label"] == ref["label"]
    out = clf.predict(images, column="image")
    assert list(out.columns) == ["image", "label", "pred_label", "pred_score"]


def test_top_k_keeps_the_k_best(clf, images):
    r = clf.predict(images.image[0], top_k=1)
    assert list(r["scores"]) == [r["label"]]


def test_past_the_held_budget_images_are_decoded_again_in_their_batch(clf, images, monkeypatch):
    from appkit.tasks.base import _Deferred

    paths = list(images.image)
    ref = clf.predict(paths)
    decoded = []
    real = type(clf)._preprocess
    monkeypatch.setattr(type(clf), "_preprocess", lambda self, item, **kw: decoded.append(item) or real(self, item, **kw))
    one = 3 * 32 * 32                                   # the tiny model's 32 x 32 uint8 crop
    clf.held_inputs_mb = 3.5 * one / 2**20              # room for three
    units, _, _ = clf._preprocess_items(paths, errors="raise", where="input")
    assert [isinstance(u, _Deferred) for _, u in units] == [False] * 3 + [True] * (len(paths) - 3)
    decoded.clear()
    out = clf.predict(paths)
    assert decoded == paths + paths[3:]                 # checked once each; the nine past the budget again in a batch
    assert [r["label"] for r in out] == [r["label"] for r in ref]
    assert [r["score"] for r in out] == pytest.approx([r["score"] for r in ref], abs=1e-6)


def test_a_file_that_breaks_after_its_check_is_named(clf, images, monkeypatch):
    paths = list(images.image[:2])
    clf.held_inputs_mb = 0
    real = type(clf)._preprocess
    calls = []

    def breaks_later(self, item, **kw):
        calls.append(item)
        if len(calls) > len(paths):       # the re-read at batch time: the file was truncated meanwhile
            open(item, "wb").write(b"\xff\xd8\xff")
        return real(self, item, **kw)

    monkeypatch.setattr(type(clf), "_preprocess", breaks_later)
    with pytest.raises(MediaError, match="(?is)input 0.*passed its checks at the start of this call"):
        clf.predict(paths)


def test_awkward_but_valid_images_are_all_read(clf, bad):
    for name in ("cmyk", "grayscale", "rgba", "sixteen_bit", "palette", "exif_rotated"):
        im = decode_image(str(bad[name]), where="input 0")
        assert im.mode == "RGB", name
    assert decode_image(str(bad["exif_rotated"]), where="x").size == (64, 96)   # turned upright
    sixteen = np.asarray(decode_image(str(bad["sixteen_bit"]), where="x"))
    assert sixteen.max() > 200                                                    # scaled, not clipped to 255/65535
    rgba = np.asarray(decode_image(str(bad["rgba"]), where="x"))
    assert (rgba[:, 0] > 240).all()                                               # fully transparent column -> white
    out = clf.predict([str(bad[n]) for n in ("cmyk", "grayscale", "rgba", "sixteen_bit", "palette", "exif_rotated")])
    assert all(r["label"] in ("red", "blue") for r in out)


@pytest.mark.parametrize("name, message", [
    ("truncated", r"Input 0 \('.*truncated.jpg'\) is damaged or cut short"),
    ("not_an_image", "not an image Pillow can read (it looks like a text file)"),
    ("empty", "is empty (0 bytes)"),
    ("bomb", "too large to decode safely: 400,000,000 pixels"),
])
def test_broken_files_raise_media_error_naming_the_file(clf, bad, name, message):
    with pytest.raises(MediaError, match=message if name == "truncated" else re.escape(message)) as e:
        clf.predict(str(bad[name]))
    assert bad[name].name in str(e.value) and "How to fix" in str(e.value)


def test_errors_skip_predicts_every_good_image_and_lists_the_bad(clf, bad):
    paths = [str(p) for p in bad.values()]
    with pytest.warns(UserWarning, match="Skipped 4 of 10"):
        out = clf.predict(paths, errors="skip")
    broken = {"truncated", "not_an_image", "empty", "bomb"}
    assert [r is None for r in out] == [name in broken for name in bad]
    assert {paths[i].rsplit("/", 1)[1].split(".")[0] for i, _ in clf.skipped} == broken
    assert all(re.search(r"\.(jpg|png)", msg) for _, msg in clf.skipped)


def test_wrong_types_and_missing_files_say_what_was_expected(clf, tmp_path):
    with pytest.raises(DataError, match="Input 1 is a float"):
        clf.predict([np.zeros((8, 8, 3), np.uint8), float("nan")])
    with pytest.raises(DataError, match="does not exist"):
        clf.predict(str(tmp_path / "nope.jpg"))
    with pytest.raises(DataError, match="is a folder, not an image"):
        clf.predict([str(tmp_path)])
    with pytest.raises(DataError, match=re.escape("array of shape (5, 6, 7)")):
        clf.predict(np.zeros((5, 6, 7)))


# ---------------------------------------------------------------- labels and training

def test_new_labels_need_fine_tuning_first(tmp_path, images):
    clf = appkit.load("image-classification", make_tiny_lite_folder(tmp_path / "m"), labels=["cat", "dog"])
    with pytest.raises(NotTrainedError, match=re.escape("run .fine_tune(data)")):
        clf.predict(images.image[0])
    clf.fine_tune(images.assign(label=["cat", "dog"] * 6), epochs=1, progress=False)
    assert clf.predict(images.image[0])["label"] in ("cat", "dog")


def test_folder_of_labelled_subfolders_trains_and_evaluates(clf, images, tmp_path):
    root = tmp_path / "photos"
    for p, y in zip(images.image, images.label):
        (root / y).mkdir(parents=True, exist_ok=True)
        (root / y / p.rsplit("/", 1)[1]).write_bytes(open(p, "rb").read())
    (root / "red" / "notes.txt").write_text("not a picture")
    with pytest.warns(UserWarning, match=re.escape("not images in a label sub-folder: red/notes.txt")):
        run = clf.fine_tune(root, epochs=2, progress=False)
    assert run.history["train_loss"].notna().any()
    with pytest.warns(UserWarning):
        report = clf.evaluate(root)
    assert len(report.table) == 12


def test_head_fine_tune_learns_red_from_blue(clf, images, tmp_path):
    # a head that ignored its input could not beat 50% here: the two colours alternate
    run = clf.fine_tune(images, epochs=30, learning_rate=3e-2, output_dir=tmp_path / "run", progress=False)
    assert run.strategy == "head"
    held_out = make_colour_images(tmp_path / "more", n=16, size=40)       # other noise, another size
    assert clf.evaluate(held_out).metrics["accuracy"] >= 0.9


def test_empty_folder_and_single_label_folder_are_named(clf, tmp_path, images):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=re.escape(f"training data folder {str(empty)!r} holds no images")):
        clf.fine_tune(empty, progress=False)
    one = tmp_path / "one" / "cats"
    one.mkdir(parents=True)
    (one / "a.jpg").write_bytes(open(images.image[0], "rb").read())
    with pytest.raises(DataError, match="has a single label 'cats'.*at least two sub-folders"):
        clf.fine_tune(tmp_path / "one", progress=False)


def test_bad_training_image_stops_before_any_training(clf, images, bad):
    train = images.copy()
    train.loc[5, "image"] = str(bad["truncated"])
    with pytest.raises(MediaError, match="Row 5 of the training data .*truncated.jpg"):
        clf.fine_tune(train, progress=False)


def test_full_strategy_augments_keeps_batchnorm_statistics_and_round_trips(clf, images, tmp_path):
    import torch

    bn = {k: v.clone() for k, v in clf.model.state_dict().items() if "running_" in k}
    conv = clf.model.efficientnet.stem_conv.weight.detach().clone()
    run = clf.fine_tune(images, strategy="full", epochs=2, batch_size=4, learning_rate=1e-3,
                        output_dir=tmp_path / "r", progress=False)
    assert run.strategy == "full" and run.history["train_loss"].notna().any()
    after = clf.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in bn.items())     # BN statistics frozen
    assert not torch.equal(conv, clf.model.efficientnet.stem_conv.weight)  # ... but weights trained
    before = clf.predict(list(images.image))
    again = appkit.load("image-classification", clf.save(tmp_path / "saved")).predict(list(images.image))
    assert [r["label"] for r in before] == [r["label"] for r in again]


def test_augmentation_is_seeded_and_keeps_shape_and_range():
    import torch

    x = torch.randint(0, 256, (3, 32, 32)).float()
    torch.manual_seed(1)
    a = _augment(x.clone())
    torch.manual_seed(1)
    b = _augment(x.clone())
    assert a.shape == x.shape and torch.equal(a, b) and 0 <= a.min() and a.max() <= 255
    assert not torch.equal(a, x)


def test_same_picture_in_train_and_eval_is_flagged(clf, images, tmp_path):
    ev = images.head(4).copy()
    copies = []
    for i, p in enumerate(ev.image):                       # the same files under other names
        copies.append(tmp_path / f"copy_{i}.jpg")
        copies[-1].write_bytes(open(p, "rb").read())
    ev["image"] = [str(c) for c in copies]
    train = images.assign(image=[open(p, "rb").read() for p in images.image])   # bytes work as inputs too
    with pytest.warns(UserWarning, match="4 examples appear in both the training and the evaluation data"):
        clf.fine_tune(train, eval_data=ev, epochs=1, progress=False)


def test_in_memory_images_are_fingerprinted_by_content(clf):
    from appkit.data import data_fingerprint

    a = np.zeros((40, 40, 3), np.uint8)
    b = a.copy()
    b[20, 20] = 255     # same corners: numpy prints both arrays identically
    fa = data_fingerprint(clf, clf._read([{"image": a, "label": "x"}], columns=None, where="d"))
    fb = data_fingerprint(clf, clf._read([{"image": b, "label": "x"}], columns=None, where="d"))
    assert fa != fb
    raw = data_fingerprint(clf, clf._read([{"image": b"\xff\xd8 not text", "label": "x"}], columns=None, where="d"))
    assert len(raw) == 16   # bytes fingerprint without being decoded as text


def test_datasets_dataset_with_image_feature(clf, images):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"image": list(images.image), "label": list(images.label)})
    ds = ds.cast_column("image", datasets.Image())
    run = clf.fine_tune(ds, epochs=1, progress=False)
    assert len(run.history)
    # the Image feature decodes to the same pixels as the paths: evaluate agrees with predict on the files
    preds = [r["label"] for r in clf.predict(list(images.image))]
    assert clf.evaluate(ds).metrics["accuracy"] == pytest.approx(np.mean([p == y for p, y in zip(preds, images.label)]))


# ---------------------------------------------------------------- transformers vision models

def test_transformers_vit_by_folder_head_and_full_and_save(tmp_path, images):
    folder = make_tiny_vit_folder(tmp_path / "vit")
    clf = appkit.load("image-classification", folder)
    assert type(clf.model).__name__ == "ViTForImageClassification"
    feats = clf._features(clf._collate([clf._preprocess(images.image[0], where="x")]))
    assert feats.shape == (1, 32)                       # the [CLS] vector the classifier reads
    clf.fine_tune(images.assign(label=["a", "b", "c"] * 4), epochs=2, progress=False)   # new classes: new head
    assert clf.labels == ["a", "b", "c"] and clf.model.classifier.out_features == 3
    clf.fine_tune(images.assign(label=["a", "b", "c"] * 4), strategy="full", epochs=1, progress=False)
    saved = clf.save(tmp_path / "saved")
    assert json.loads((saved / "preprocessor_config.json").read_text())["size"] == {"height": 32, "width": 32}
    again = appkit.load("image-classification", saved)
    assert again.labels == ["a", "b", "c"]
    assert again.predict(images.image[0])["label"] == clf.predict(images.image[0])["label"]


# ---------------------------------------------------------------- showing

def test_report_shows_worst_errors_as_thumbnails_and_hides_them_on_request(clf, images, tmp_path):
    report = clf.evaluate(images)
    assert not report.table.correct.all()               # a random model gets some wrong
    html = report._repr_html_()
    assert 'class="thumb"' in html and "data:image/jpeg;base64," in html and "predicted <b>" in html
    private = report.to_html(tmp_path / "p.html", examples=False).read_text()
    assert "data:image/jpeg" not in private


def test_show_batch_returns_a_figure_with_the_labels(clf, images, bad):
    import matplotlib

    matplotlib.use("Agg")
    fig = clf.show_batch(images, n=6, ncols=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == list(images.label[:6])
    with pytest.warns(UserWarning, match="truncated"):
        fig = clf.show_batch(pd.DataFrame({"image": [str(bad["truncated"]), images.image[0]]}))
    assert len(fig.axes) == 2


def test_catalogue_lists_the_packaged_model_as_default():
    rows = appkit.list_models("image-classification").set_index("name")
    assert rows.loc["efficientnet-lite0", "default"] and "vit-base" in rows.index
    with pytest.raises(AppkitError, match="Did you mean 'efficientnet-lite0'"):
        appkit.load("image-classification", "efficientnet-lite")


def test_top_strategy_trains_the_last_block_on_cached_features_and_round_trips(clf, images, tmp_path):
    """strategy="top": the input of the last block is computed once, then the last block, the 1x1 head
    convolution and the classifier train; everything below stays as it was, and the folder reloads."""
    import torch

    assert clf.strategies == ("head", "top", "full")
    enc = clf.model.efficientnet
    below = {k: v.clone() for k, v in enc.state_dict().items() if not k.startswith((f"blocks.{len(enc.blocks) - 1}.", "head_"))}
    last = enc.blocks[-1].project_conv.weight.detach().clone()
    run = clf.fine_tune(images, strategy="top", epochs=30, learning_rate=3e-2, output_dir=tmp_path / "r", progress=False)
    assert run.strategy == "top" and run.history["train_loss"].notna().any()
    assert list((tmp_path / "r").glob("features-train-*.safetensors"))       # cached on disk as well
    after = enc.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in below.items())          # below the last block: untouched
    assert not torch.equal(last, enc.blocks[-1].project_conv.weight)          # the last block trained
    held_out = make_colour_images(tmp_path / "more", n=16, size=40)
    assert clf.evaluate(held_out).metrics["accuracy"] >= 0.9                  # 0.5 is chance: the colours alternate
    again = appkit.load("image-classification", clf.save(tmp_path / "saved"))
    assert [r["label"] for r in again.predict(list(held_out.image))] == [r["label"] for r in clf.predict(list(held_out.image))]


def test_top_features_are_what_the_last_block_receives(clf, images):
    import torch

    from appkit.tasks.image_classification import _LiteTop

    batch = clf._collate([clf._preprocess(x, where="x") for x in images.image[:4]])
    with torch.no_grad():
        logits = _LiteTop(clf.model).eval()(clf._top_features(batch))
        assert torch.allclose(logits, clf.model.eval()(**batch).logits, atol=1e-5)


def test_a_transformers_vit_offers_no_top_strategy(tmp_path, images):
    vit = appkit.load("image-classification", make_tiny_vit_folder(tmp_path / "vit"))
    assert vit.strategies == ("head", "full")
    with pytest.raises(AppkitError, match=re.escape("Unknown strategy 'top'. Available: ['auto', 'full', 'head']")):
        vit.fine_tune(images, strategy="top", progress=False)
