"""Peak memory of predicting a 100,000-row DataFrame column of text with the packaged text model.

appkit checks every text first (cheap: the strings themselves are kept, not copies), then streams
them through the model one batch at a time (64 texts, cut at 256 tokens), so what grows with the
number of rows is only the results (one small dict per row) and the output DataFrame's columns.
A copy of the tokenised corpus, or every batch's activations, would instead grow by tens of
kilobytes per row.

Peer: the bound stated below, from what must be held: the user's DataFrame and its copy with the
prediction columns, one result per row, and one batch of activations. Prints the resident memory
(RSS, sampled every 10 ms) before, at the peak of and after ``predict``, the growth per row, and
whether the peak stayed within the bound; exits 1 if not.

    python bench/predict_memory.py [--n 100000] [--seed 0] [--model FOLDER]

``--model`` takes another text-classification folder (e.g. a tiny one, to check the per-row growth
quickly on a busy machine); the default is the packaged MiniLM-L6 (zero-shot with three labels).
"""
from __future__ import annotations

import argparse
import os
import random
import re
import time
import warnings

from _fair import PeakRSS, record, rss_mb

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BOUND_FIXED_MB = 400        # one batch of 64 x 256 tokens through MiniLM-L6 (activations, attention), allocator slack
BOUND_PER_ROW_KB = 2.0      # a result dict with its scores, the output frame's two columns, the sort order


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="a text-classification folder (default: the packaged MiniLM-L6)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import pandas as pd
    import torch

    import appkit

    clf = appkit.load("text-classification", args.model, labels=["negative", "neutral", "positive"])
    clf.predict(["warm-up"] * 8)
    df = pd.DataFrame({"id": range(args.n), "text": texts(args.n, args.seed)})
    chars = int(df.text.str.len().sum())
    print(f"{args.n:,} rows, {chars / args.n:.0f} characters on average ({chars / 2**20:.1f} MB of text); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {clf.meta.get('catalogue') or args.model}")
    before = rss_mb()
    t0 = time.perf_counter()
    with PeakRSS() as peak:
        out = clf.predict(df, column="text", progress=False)
    seconds = time.perf_counter() - t0
    after = rss_mb()
    assert len(out) == args.n and out["pred_label"].notna().all()
    grew = peak.peak - before
    bound = BOUND_FIXED_MB + BOUND_PER_ROW_KB * args.n / 1024
    print(f"RSS before predict {before:.0f} MB, peak {peak.peak:.0f} MB, after {after:.0f} MB (holding the result frame)")
    print(f"peak growth {grew:.0f} MB = {grew * 1024 / args.n:.2f} KB per row; "
          f"bound {BOUND_FIXED_MB} MB + {BOUND_PER_ROW_KB} KB/row = {bound:.0f} MB: {'within' if grew <= bound else 'EXCEEDED'}")
    print(f"{args.n / seconds:.0f} texts/s ({seconds:.0f} s); labels {out.pred_label.value_counts().to_dict()}")
    record("predict_memory", [{
        "task": f"text predict, {args.n:,} rows", "appkit": "predict(df, column=...)", "peer": "stated bound",
        "appkit_s": round(seconds, 1), "peer_s": None,
        "quality": f"all {args.n:,} rows labelled",
        "memory": f"+{grew:.0f} MB ({grew * 1024 / args.n:.2f} KB/row; bound {bound:.0f} MB)",
        "notes": "within the bound" if grew <= bound else "BOUND EXCEEDED"}])
    return 0 if grew <= bound else 1


if __name__ == "__main__":
    raise SystemExit(main())
