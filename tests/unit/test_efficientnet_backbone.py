"""EfficientNet-Lite as a transformers model, on a tiny random network (runs in about a second)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageClassification

from appkit.backbones.efficientnet_lite import (
    EfficientNetLiteConfig,
    EfficientNetLiteForImageClassification,
    EfficientNetLitePreprocessor,
    register,
)

TINY_BLOCKS = [
    {"repeats": 1, "kernel_size": 3, "stride": 1, "expand_ratio": 1, "in_channels": 8, "out_channels": 8},
    {"repeats": 2, "kernel_size": 5, "stride": 2, "expand_ratio": 2, "in_channels": 8, "out_channels": 16},
]


def tiny_model(labels=("cat", "dog", "mug")):
    torch.manual_seed(0)
    config = EfficientNetLiteConfig(
        stem_channels=8, blocks=TINY_BLOCKS, head_channels=32, image_size=32,
        id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
    )
    model = EfficientNetLiteForImageClassification(config)
    with torch.no_grad():  # non-trivial batch-norm statistics, so the round trip must carry them
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_save_and_auto_load_give_identical_logits(tmp_path):
    model = tiny_model()
    x = torch.randn(2, 3, 32, 32)
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pkl", ".pt", ".pth"))]

    register()  # idempotent: a second call must not raise
    assert isinstance(AutoConfig.from_pretrained(tmp_path), EfficientNetLiteConfig)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert isinstance(loaded, EfficientNetLiteForImageClassification)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)
    assert loaded.config.id2label == {0: "cat", 1: "dog", 2: "mug"}


def test_forward_loss_and_features_shape():
    model = tiny_model()
    x = torch.randn(4, 3, 40, 24)  # any size: TF "SAME" padding is computed per input
    out = model(x, labels=torch.tensor([0, 1, 2, 0]))
    assert out.logits.shape == (4, 3)
    assert out.loss.ndim == 0 and out.loss.item() > 0
    assert model.get_image_features(x).shape == (4, 32)
    assert model(x).loss is None


def test_reset_classifier_swaps_head_and_labels(tmp_path):
    model = tiny_model()
    backbone_before = {k: v.clone() for k, v in model.efficientnet.state_dict().items()}
    model.reset_classifier(["shoe", "hat"])
    assert model.classifier.out_features == 2
    assert model.config.id2label == {0: "shoe", 1: "hat"}
    assert model.config.label2id == {"shoe": 0, "hat": 1}
    assert model.config.num_labels == 2
    for k, v in model.efficientnet.state_dict().items():
        assert torch.equal(v, backbone_before[k])
    # a new head starts near uniform predictions
    probs = model(torch.randn(2, 3, 32, 32)).logits.softmax(-1)
    assert torch.allclose(probs, torch.full_like(probs, 0.5), atol=0.2)

    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert loaded.config.id2label == {0: "shoe", 1: "hat"}
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)

    with pytest.raises(ValueError, match="distinct"):
        model.reset_classifier(["a", "a"])


def test_preprocessor_shape_and_round_trip(tmp_path):
    pre = EfficientNetLitePreprocessor(resize_shortest_edge=40, crop_size=32, resample="bilinear")
    images = [Image.new("RGB", (80, 50), "white"), Image.new("L", (30, 60), 0)]
    x = pre(images)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full_like(x[0], (1 - 127 / 255) / (128 / 255)), atol=1e-5)
    pre.save_pretrained(tmp_path)
    assert EfficientNetLitePreprocessor.from_pretrained(tmp_path) == pre
