"""The from-scratch CNN learns the digits well above chance, and is reproducible."""
from __future__ import annotations

import re

import numpy as np
import pytest

from appkit.baselines import train_small_cnn
from appkit.errors import DataError


def test_small_cnn_learns_digits_quickly():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data / 16.0, [str(t) for t in d.target]
    model = train_small_cnn(x[:500], y[:500], epochs=6, seed=0)
    acc = np.mean(np.array(model.predict(x[1000:1300])) == np.array(y[1000:1300]))
    assert acc > 0.85, acc                                   # chance is 0.10
    assert model.labels == [str(i) for i in range(10)] and model.seconds > 0
    once, twice = (train_small_cnn(x[:200], y[:200], epochs=1, seed=3) for _ in range(2))
    assert once.predict(x[1000:1050]) == twice.predict(x[1000:1050])


def test_small_cnn_checks_its_input():
    with pytest.raises(DataError, match=re.escape("64 pixel values")):
        train_small_cnn(np.zeros((4, 10)), ["a", "b", "a", "b"])
    with pytest.raises(DataError, match="two labels"):
        train_small_cnn(np.zeros((4, 64)), ["a"] * 4)
