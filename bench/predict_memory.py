"""Peak memory of predicting many inputs at once: 100,000 rows of text, 10,000 images, or hours of audio.

text: appkit checks every text first (cheap: the strings themselves are kept, not copies), then streams
them through the model one batch at a time (64 texts, cut at 256 tokens), so what grows with the
number of rows is only the results (one small dict per row) and the output DataFrame's columns.
A copy of the tokenised corpus, or every batch's activations, would instead grow by tens of
kilobytes per row.

image: 10,000 clip-art files (the 320 of ``appkit.samples.clipart_products()``, repeated) given as a list
of paths to the packaged EfficientNet-Lite0. Every image is decoded and checked before any model work (a bad
file fails first); a call keeps the first ``held_inputs_mb`` (512 MB: ~3,500 images as 3 x 224 x 224 uint8) and
decodes the rest again in their batch, so past that only the results grow (each holds the top 5 of the 1,000
ImageNet scores; all 1,000, the default before, were about 50 KB per image).

speech: real short clips (LibriVox and Asterisk prompts, ``appkit.samples.speech``, repeated) given as a
list of paths to the packaged Whisper tiny.en: ``--hours`` of them (default 10) in one call, in a fresh process
after an 8-clip warm-up, measured (not extrapolated). Every clip is read and checked before any model work; a
call keeps the 16 kHz samples of the first ``held_inputs_mb`` (512 MB, about 2.3 hours) and reads the rest from
their files again when their batch runs, so past that the call grows only by its results. 10 hours took 124
minutes on 2 AVX2 cores in float32 (2026-12-07: peak +1,009 MB of its 1,262 MB bound); ``--threads 1`` leaves one
core free at about half the speed.

Peer: the bound stated below for each task, from what must be held: the inputs as appkit keeps them, one
result per input, and one batch of activations. Prints the resident memory (RSS, sampled every 10 ms)
before, at the peak of and after ``predict``, the growth per input (per hour of audio), and whether the
peak stayed within the bound; exits 1 if not.

    python bench/predict_memory.py [--task text] [--n 100000] [--seed 0] [--model FOLDER] [--threads N]
    python bench/predict_memory.py --task image [--n 10000] [--threads N]
    python bench/predict_memory.py --task speech [--hours 10] [--seed 0] [--threads N]

``--model`` takes another text-classification folder (e.g. a tiny one, to check the per-row growth
quickly on a busy machine); the default is the packaged MiniLM-L6 (zero-shot with three labels).
``--threads`` sets torch's threads (default: torch's own); on a machine whose cores another process keeps
busy, ``--threads 1`` is far faster (two threads wait on each other: 48 images took 103 s with 2, 1.7 s with 1).
Results: bench/results/predict_memory.json (text), predict_memory_image.json, predict_memory_speech.json.
"""
from __future__ import annotations

import argparse
import gc
import os
import random
import re
import time
import warnings

from _fair import PeakRSS, record, rss_mb

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BOUND_FIXED_MB = 400        # one batch of 64 x 256 tokens through MiniLM-L6 (activations, attention), allocator slack
BOUND_PER_ROW_KB = 2.0      # a result dict with its scores, the output frame's two columns, the sort order

# image: one batch of 8 x 3 x 224 x 224 through EfficientNet-Lite0 (its largest activations are 8 x 32 x 112 x 112
# float32, 13 MB each, a few alive at once), oneDNN's scratch, the batch's float32 copy, allocator slack
IMAGE_FIXED_MB = 150
# the decoded, cropped 3 x 224 x 224 uint8 images (147 KB each) a call keeps: the task's held_inputs_mb (read from
# the task; images past it are decoded again in their batch); then per image: the result dict with its top-5
# scores (~1 KB), the path's checked entry, list slots, allocator slack
IMAGE_PER_IMAGE_KB = 12

# speech: one batch of 8 x 30 s windows through Whisper tiny.en: log-mel features (8 x 80 x 3000 float32, 8 MB), the
# encoder's activations for one window at a time (1500 x 384, its MLP 4x that: +40-70 MB measured in float32), its
# outputs for the batch (18 MB float32), the decoder's cross-attention cache (4 layers x K and V x 8 x 1500 x 384:
# 74 MB in bfloat16, 147 MB in float32); in bfloat16, oneDNN's cache of bf16 kernels (~150 MB, measured); allocator
# slack. Float32 (AVX2): one hour with 64 MB held peaked at +529 MB against 589; ten hours (512 MB held) +1,009 of 1,262
SPEECH_FIXED_MB = 500
# the checked clips' samples a call keeps (the task's held_inputs_mb, read here from the task), then per hour of
# audio: ~1,900 clips' objects and result dicts, list slots, allocator slack
SPEECH_PER_HOUR_MB = 25


def texts(n: int, seed: int) -> list[str]:
    """Real drug reviews cut to 1-2 sentences (lengths vary as in real use), repeated to n rows."""
    from appkit.samples import drug_reviews

    rng = random.Random(seed)
    sentences = [re.split(r"(?<=[.!?])\s+", t) for t in drug_reviews().text]
    out = []
    while len(out) < n:
        s = rng.choice(sentences)
        k = rng.randint(1, 2)
        start = rng.randint(0, max(0, len(s) - k))
        out.append(" ".join(s[start:start + k]))
    return out


def measured(call):
    """(what call() returned, its seconds, RSS before it, the peak RSS while it ran, RSS after it) in MB."""
    before = rss_mb()
    t0 = time.perf_counter()
    with PeakRSS() as peak:
        out = call()
    seconds = time.perf_counter() - t0
    return out, seconds, before, peak.peak, rss_mb()


def verdict(grew: float, bound: float) -> str:
    return "within" if grew <= bound else "EXCEEDED"


def run_text(args) -> int:
    import pandas as pd
    import torch

    import appkit

    n = args.n or 100_000
    clf = appkit.load("text-classification", args.model, labels=["negative", "neutral", "positive"])
    clf.predict(["warm-up"] * 8)
    df = pd.DataFrame({"id": range(n), "text": texts(n, args.seed)})
    chars = int(df.text.str.len().sum())
    print(f"{n:,} rows, {chars / n:.0f} characters on average ({chars / 2**20:.1f} MB of text); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {clf.meta.get('catalogue') or args.model}")
    out, seconds, before, peak, after = measured(lambda: clf.predict(df, column="text", progress=False))
    assert len(out) == n and out["pred_label"].notna().all()
    grew = peak - before
    bound = BOUND_FIXED_MB + BOUND_PER_ROW_KB * n / 1024
    print(f"RSS before predict {before:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB (holding the result frame)")
    print(f"peak growth {grew:.0f} MB = {grew * 1024 / n:.2f} KB per row; "
          f"bound {BOUND_FIXED_MB} MB + {BOUND_PER_ROW_KB} KB/row = {bound:.0f} MB: {verdict(grew, bound)}")
    print(f"{n / seconds:.0f} texts/s ({seconds:.0f} s); labels {out.pred_label.value_counts().to_dict()}")
    record("predict_memory", [{
        "task": f"text predict, {n:,} rows", "appkit": "predict(df, column=...)", "peer": "stated bound",
        "appkit_s": round(seconds, 1), "peer_s": None,
        "quality": f"all {n:,} rows labelled",
        "memory": f"+{grew:.0f} MB ({grew * 1024 / n:.2f} KB/row; bound {bound:.0f} MB)",
        "notes": "within the bound" if grew <= bound else "BOUND EXCEEDED"}])
    return 0 if grew <= bound else 1


def run_image(args) -> int:
    import torch

    import appkit
    from appkit.samples import clipart_products

    n = args.n or 10_000
    files = list(clipart_products().image)
    paths = [files[i % len(files)] for i in range(n)]
    clf = appkit.load("image-classification")
    clf.predict(files[:8], progress=False)
    print(f"{n:,} image paths ({len(files)} clip-art files repeated); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; model {clf.meta.get('catalogue')}")
    out, seconds, before, peak, after = measured(lambda: clf.predict(paths, progress=False))
    assert len(out) == n and all(r and r["label"] for r in out)
    grew = peak - before
    bound = IMAGE_FIXED_MB + clf.held_inputs_mb + IMAGE_PER_IMAGE_KB * n / 1024
    print(f"RSS before predict {before:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB (holding the results)")
    print(f"peak growth {grew:.0f} MB = {grew * 1024 / n:.1f} KB per image; bound {IMAGE_FIXED_MB} MB + "
          f"{clf.held_inputs_mb:g} MB of held images + {IMAGE_PER_IMAGE_KB} KB/image = {bound:.0f} MB: "
          f"{verdict(grew, bound)}")
    print(f"{n / seconds:.0f} images/s ({seconds:.0f} s); {len(out[0]['scores'])} scores per result")
    record("predict_memory_image", [{
        "task": f"predict memory image ({n:,} images)", "appkit": "predict(list of paths)", "peer": "stated bound",
        "appkit_s": round(seconds, 1), "peer_s": None, "quality": f"all {n:,} images labelled",
        "memory": f"+{grew:.0f} MB ({grew * 1024 / n:.1f} KB/image; bound {bound:.0f} MB)",
        "notes": ("within the bound" if grew <= bound else "BOUND EXCEEDED")
                 + f"; each result keeps {len(out[0]['scores'])} scores"}])
    return 0 if grew <= bound else 1


def speech_clips(minutes: float, seed: int, window_s: float) -> list[tuple[str, float]]:
    """(path, seconds) of real short clips (each under one model window), shuffled and repeated to `minutes`."""
    import pandas as pd

    from appkit.samples.speech import asterisk_prompts, librivox_clips

    pool = pd.concat([librivox_clips(), asterisk_prompts()])[["audio", "duration_s"]]
    pool = list(pool[pool.duration_s < window_s].itertuples(index=False, name=None))
    random.Random(seed).shuffle(pool)
    out, total = [], 0.0
    while total < minutes * 60:
        out.append(pool[len(out) % len(pool)])
        total += out[-1][1]
    return out


def one_call(hours: float, seed: int, threads: int | None, held_mb: float | None = None) -> dict:
    """In a fresh process: load the model, warm it up on 8 clips, then one predict of `hours` of clips.
    Returns the call's hours of audio, its peak and after-call RSS above the RSS before it (MB), and seconds."""
    warnings.simplefilter("ignore")
    import torch

    import appkit

    if threads:
        torch.set_num_threads(threads)
    clf = appkit.load("speech-recognition")
    if held_mb is not None:
        clf.held_inputs_mb = held_mb       # this instance only
    clips = speech_clips(hours * 60, seed, clf.window_s)
    paths = [p for p, _ in clips]
    clf.predict(paths[:8], progress=False)       # the bfloat16 copy of the model is made here, as the weights, once
    gc.collect()
    out, seconds, before, peak, after = measured(lambda: clf.predict(paths, progress=False))
    assert len(out) == len(paths) and all(r is not None for r in out)
    return {"hours": sum(s for _, s in clips) / 3600, "clips": len(paths), "held_mb": clf.held_inputs_mb,
            "before": before, "peak": peak - before, "after": after - before, "seconds": seconds,
            "packing": dict(out.packing),
            "setup": f"torch {torch.__version__}, {torch.get_num_threads()} threads; model "
                     f"{clf.meta.get('catalogue')}, {clf.runs_in}"}


def run_speech(args) -> int:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    print(f"{args.hours:g} h of real LibriVox and Asterisk clips (repeated) in one call, in a fresh process after an "
          f"8-clip warm-up")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        c = pool.submit(one_call, args.hours, args.seed, args.threads, args.held_mb).result()
    bound = SPEECH_FIXED_MB + c["held_mb"] + SPEECH_PER_HOUR_MB * c["hours"]
    ok = c["peak"] <= bound
    print(f"{c['setup']}; {c['clips']:,} clips, {c['hours']:.2f} h of audio, {c['seconds']:.0f} s "
          f"({c['hours'] * 3600 / c['seconds']:.0f}x real time)")
    print(f"packed {c['packing']['clips']:,} clips into {c['packing']['windows']:,} windows; "
          f"{c['packing']['retried']:,} transcribed again alone (their split was in doubt)")
    print(f"RSS before {c['before']:.0f} MB, peak +{c['peak']:.0f} MB, after +{c['after']:.0f} MB (holding the results)")
    print(f"bound {SPEECH_FIXED_MB} MB + {c['held_mb']:g} MB of held clips + {SPEECH_PER_HOUR_MB} MB/h x "
          f"{c['hours']:.1f} h = {bound:.0f} MB: {verdict(c['peak'], bound)}")
    record("predict_memory_speech", [{
        "task": f"predict memory speech ({c['hours']:.1f} h in one call)", "appkit": "predict(list of clip paths)",
        "peer": "stated bound", "appkit_s": round(c["seconds"], 1), "peer_s": None,
        "quality": f"all {c['clips']:,} clips transcribed",
        "memory": f"+{c['peak']:.0f} MB (bound {bound:.0f} MB)",
        "notes": ("measured in one call in a fresh process (the process peak below is the parent's); "
                  + (f"held_inputs_mb lowered to {c['held_mb']:g} so that a short call runs past it; "
                     if args.held_mb is not None else "")
                  + ("within the bound" if ok else "BOUND EXCEEDED"))}])
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["text", "image", "speech"], default="text")
    ap.add_argument("--n", type=int, default=None, help="rows (text, default 100,000) or images (default 10,000)")
    ap.add_argument("--hours", type=float, default=10, help="speech: hours of audio in one call (default 10)")
    ap.add_argument("--held-mb", type=float, default=None,
                    help="speech: the call's held_inputs_mb (default: the task's 512), lower to check past the budget "
                         "in a shorter run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="text: a text-classification folder (default: packaged MiniLM-L6)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return {"text": run_text, "image": run_image, "speech": run_speech}[args.task](args)


if __name__ == "__main__":
    raise SystemExit(main())
