"""appkit/runtime.py's memory rule: a long predict call gives freed heap memory back as it goes."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import appkit
from appkit import runtime

from ..conftest import make_tiny_bert_folder


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_heap_trimmer_trims_at_most_every_interval():
    trimmer = runtime.HeapTrimmer(every_s=2.0)
    calls, now = [], [trimmer.last]
    trimmer._trim, trimmer._clock = calls.append, lambda: now[0]
    for step in (1.0, 1.5, 0.5, 1.9, 0.1):
        now[0] += step
        trimmer()
    assert calls == [0, 0]          # at 2.5 s and at 4.5 s, not in between


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_memory_goes_back_to_the_system():
    """What the trimmer is for: 100 KB buffers (under glibc's mmap threshold, so on the heap) freed but for
    the last one stay in the process until malloc_trim gives them back."""
    held = [np.ones(100_000 // 8) for _ in range(2000)]        # ~200 MB on the heap
    last = held[-1]
    del held
    before = rss_mb()
    trimmer = runtime.HeapTrimmer(every_s=0.0)
    assert trimmer._trim is not None
    trimmer()
    assert before - rss_mb() > 100, (before, rss_mb())
    assert last.sum() == len(last)


def test_predict_gives_memory_back_between_batches(tmp_path, monkeypatch):
    from appkit.tasks import base

    calls = []

    class Counting(runtime.HeapTrimmer):
        def __call__(self):
            calls.append("batch")

        def now(self):
            calls.append("end")

    monkeypatch.setattr(base, "HeapTrimmer", Counting)
    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "bert"), labels=["negative", "positive"])
    clf.predict([f"text number {k}" for k in range(10)], batch_size=2, progress=False)
    # once after each batch (the trimmer itself decides whether to trim), then at once when the call's checked
    # inputs are dropped: what they held goes back to the system, not kept until the next call
    assert calls == ["batch"] * 5 + ["end"]


def test_heap_trimmer_now_trims_whatever_the_interval():
    trimmer = runtime.HeapTrimmer(every_s=3600.0)
    calls = []
    trimmer._trim = calls.append
    trimmer()
    trimmer.now()
    assert calls == [0]
