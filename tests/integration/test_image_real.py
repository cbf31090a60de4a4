"""The packaged EfficientNet-Lite0 through appkit: ImageNet out of the box, fine-tuned on real clip art.

About 1-2 minutes on 2 idle cores: features for 320 images, one two-step full fine-tune.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from ..conftest import IMAGENET_PACKAGES, skip_unless_installed

pytestmark = pytest.mark.integration
skip_unless_installed(*IMAGENET_PACKAGES)

from skimage import data

import appkit
from appkit.samples import clipart_products


@pytest.fixture(scope="module")
def imagenet():
    return appkit.load("image-classification")


def test_out_of_the_box_it_predicts_imagenet_classes(imagenet):
    assert imagenet.mode == "trained" and len(imagenet.labels) == 1000
    cat, coffee = imagenet.predict([data.chelsea(), data.coffee()], top_k=3)
    assert len(cat["scores"]) == 3
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(cat["scores"])
    assert {"cup", "coffee mug", "espresso", "espresso maker", "coffeepot"} & set(coffee["scores"])


def test_head_fine_tune_on_clipart_beats_the_majority_baseline_widely(tmp_path):
    clf = appkit.load("image-classification")
    train, test = clipart_products("train"), clipart_products("test")
    run = clf.fine_tune(train, output_dir=tmp_path / "run", progress=False)
    assert run.strategy == "head"                          # the CPU default
    report = clf.evaluate(test)
    baseline = next(iter(report.baseline.values()))
    assert baseline == pytest.approx(0.125)                # 8 balanced classes
    assert report.metrics["accuracy"] >= baseline + 0.35, report.metrics
    html = report._repr_html_()
    assert 'class="thumb"' in html                         # worst errors as thumbnails

    saved = clf.save(tmp_path / "clipart-model")
    again = appkit.load("image-classification", saved)
    assert again.labels == sorted(train.label.unique())
    some = list(test.image[:6])
    assert [r["label"] for r in again.predict(some)] == [r["label"] for r in clf.predict(some)]

    from transformers import pipeline                     # a plain transformers folder: pipeline reads it too

    pipe = pipeline("image-classification", model=str(saved))
    assert [r[0]["label"] for r in pipe(some, top_k=1)] == [r["label"] for r in clf.predict(some)]


def test_full_fine_tune_runs_on_the_real_model(tmp_path):
    clf = appkit.load("image-classification")
    train = clipart_products("train").groupby("label").head(2)      # 16 images, 2 steps: it runs, end to end
    stem = next(clf.model.parameters()).detach().clone()            # the first convolution, far from the head
    run = clf.fine_tune(train, strategy="full", epochs=1, batch_size=8, output_dir=tmp_path / "full", progress=False)
    assert run.history["train_loss"].notna().any()
    assert not next(clf.model.parameters()).detach().equal(stem)     # "full" trained the backbone, not only the head
    assert sorted(clf.predict(train.image.iloc[0], top_k=8)["scores"]) == sorted(train.label.unique())
