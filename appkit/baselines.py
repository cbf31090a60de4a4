"""Models trained from scratch, to compare with a pretrained model's fine-tuned head.

``train_small_cnn`` is the classic small convolutional network for tiny greyscale images (two
convolutions, a pooling step, two dense layers): on scikit-learn's 8x8 digits it reaches ~97-98%
in seconds on a CPU. It answers the question every fine-tuning result should face: would a small
model trained from nothing have done as well, and at what cost?
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .errors import DataError, _msg


@dataclass
class ScratchModel:
    net: object
    labels: list[str]
    side: int
    seconds: float          # training time

    def predict(self, pixels) -> list[str]:
        """Labels for an array (n, side*side) or a sequence of flat pixel vectors in 0..1."""
        import torch

        x = _as_batch(pixels, self.side)
        self.net.eval()
        with torch.no_grad():
            out = self.net(x).argmax(-1).numpy()
        return [self.labels[i] for i in out]


def _as_batch(pixels, side: int):
    import torch

    arr = np.stack([np.asarray(p, dtype=np.float32).reshape(-1) for p in pixels])
    if arr.shape[1] != side * side:
        raise DataError(_msg(f"Each image must have {side * side} pixel values", where=f"got {arr.shape[1]}",
                             fix=f"pass side= the image's width (here sqrt({arr.shape[1]}))"))
    return torch.from_numpy(arr).reshape(-1, 1, side, side)


def _small_cnn(side: int, n_classes: int):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (side // 2) ** 2, 64), nn.ReLU(), nn.Dropout(0.25), nn.Linear(64, n_classes),
    )


def train_small_cnn(pixels, labels, *, side: int = 8, epochs: int = 30, batch_size: int = 32,
                    learning_rate: float = 2e-3, seed: int = 0) -> ScratchModel:
    """Train the small CNN from random weights (Adam, cross-entropy) on flat pixel vectors in 0..1."""
    import torch
    import torch.nn.functional as F

    names = sorted({str(v) for v in labels}, key=lambda s: (len(s), s))
    if len(names) < 2:
        raise DataError(_msg("Training needs at least two labels", where=f"found {names}"))
    index = {n: i for i, n in enumerate(names)}
    x = _as_batch(pixels, side)
    y = torch.tensor([index[str(v)] for v in labels])
    torch.manual_seed(seed)
    net = _small_cnn(side, len(names))
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for batch in torch.randperm(len(x), generator=gen).split(batch_size):
            opt.zero_grad()
            F.cross_entropy(net(x[batch]), y[batch]).backward()
            opt.step()
    return ScratchModel(net, names, side, time.perf_counter() - t0)


__all__ = ["ScratchModel", "train_small_cnn"]
