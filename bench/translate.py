"""appkit translation vs a plain transformers ``generate`` loop: same model, same held-out strings.

The shipped appkit-mt-en-de (or --model FOLDER) on data/mt-en-de-heldout/heldout.tsv. The plain loop is
what an application writes by hand: AutoModelForSeq2SeqLM in float32, batches of --batch-size in the
file's order, the model's own generation settings (4 beams), max_new_tokens=256. appkit sorts by
length, gives each text its own budget and uses bf16 where the CPU computes it natively. Both are
warmed up, then timed in --rounds interleaved rounds (the machine may be shared: trust the ratio
more than the seconds); the median is reported with chrF against the references.

    .venv/bin/python bench/translate.py [--model appkit-mt-en-de] [--rounds 3] [--n 600]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "mt-en-de-heldout" / "heldout.tsv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="appkit-mt-en-de")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    import pandas as pd
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import appkit
    from appkit.metrics import bleu_chrf

    df = pd.read_csv(HELDOUT, sep="\t", keep_default_na=False).head(args.n)
    texts, refs = list(df.source), list(df.target)
    mt = appkit.load("translation", args.model)
    folder = mt.meta.get("source") or args.model
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)

    def plain(batch_texts):
        out = []
        with torch.inference_mode():
            for k in range(0, len(batch_texts), args.batch_size):
                enc = tok(batch_texts[k:k + args.batch_size], return_tensors="pt", padding=True)
                ids = model.generate(**enc, max_new_tokens=256)
                out += [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]
        return out

    def ours(batch_texts):
        return [r["translation"] for r in mt.predict(batch_texts, progress=False)]

    runs = {"plain transformers generate": plain, "appkit predict": ours}
    for fn in runs.values():                                   # warm-up: first calls allocate and compile
        fn(texts[:16])
    seconds = {name: [] for name in runs}
    outputs = {}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            outputs[name] = fn(texts)
            seconds[name].append(time.perf_counter() - t0)
    print(f"{len(texts)} held-out segments, {args.rounds} interleaved rounds, median:")
    rate = {}
    for name in runs:
        med = statistics.median(seconds[name])
        rate[name] = len(texts) / med
        scores = bleu_chrf(refs, outputs[name])
        print(f"  {name:28s} {rate[name]:6.1f} segments/s   chrF {scores['chrf']:.1f}  BLEU {scores['bleu']:.1f}")
    print(f"  appkit / plain: {rate['appkit predict'] / rate['plain transformers generate']:.2f}x")


if __name__ == "__main__":
    main()
