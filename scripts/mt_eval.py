"""Score a translation model folder on held-out text against copying the source unchanged.

Reads a TSV with ``source``, ``target`` and optionally ``set`` (e.g. apps / help) and
``seen_in_training`` columns (data/mt-en-de-heldout/heldout.tsv, or the corpus's test_*.tsv);
translates with appkit (the model's own beam setting, 4 for appkit-mt-en-de) and prints chrF / BLEU
per set, on unseen strings alone, and for copying; --json writes the same figures.

    python scripts/mt_eval.py --model appkit/models/appkit-mt-en-de --data data/mt-en-de-heldout/heldout.tsv
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def score(df, hyps) -> dict:
    from appkit.metrics import bleu_chrf

    refs, srcs = list(df["target"]), list(df["source"])
    model, copy = bleu_chrf(refs, hyps), bleu_chrf(refs, srcs)
    exact = sum(h == r for h, r in zip(hyps, refs)) / max(len(refs), 1)
    return {"n": len(refs), "chrf": round(model["chrf"], 1), "bleu": round(model["bleu"], 1),
            "copy_chrf": round(copy["chrf"], 1), "copy_bleu": round(copy["bleu"], 1), "exact": round(exact, 3)}


def main() -> None:
    import pandas as pd

    import appkit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="appkit/models/appkit-mt-en-de")
    ap.add_argument("--data", type=Path, nargs="+", default=[Path("data/mt-en-de-heldout/heldout.tsv")])
    ap.add_argument("--limit", type=int, default=None, help="first N rows of each file")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    frames = []
    for path in args.data:
        df = pd.read_csv(path, sep="\t", keep_default_na=False, quoting=0)
        if "set" not in df:
            df["set"] = path.stem
        frames.append(df.head(args.limit) if args.limit else df)
    df = pd.concat(frames, ignore_index=True)
    mt = appkit.load("translation", args.model)
    t0 = time.time()
    df["hyp"] = [r["translation"] for r in mt.predict(list(df["source"]), progress=False)]
    seconds = time.time() - t0
    out = {"segments_per_second": round(len(df) / seconds, 1)}
    for name, part in df.groupby("set", sort=False):
        out[name] = score(part, list(part["hyp"]))
        if "seen_in_training" in part and part["seen_in_training"].astype(int).any():
            unseen = part[part["seen_in_training"].astype(int) == 0]
            out[f"{name} (unseen strings)"] = score(unseen, list(unseen["hyp"]))
    for name, s in out.items():
        if isinstance(s, dict):
            print(f"{name:24s} n={s['n']:5d}  chrF {s['chrf']:5.1f}  BLEU {s['bleu']:5.1f}  exact {s['exact']:.1%}   "
                  f"copying: chrF {s['copy_chrf']:5.1f}  BLEU {s['copy_bleu']:5.1f}")
    print(f"{out['segments_per_second']} segments/s")
    for _, r in df.sample(min(12, len(df)), random_state=0).iterrows():
        print(f"  {r['source'][:70]!r} -> {r['hyp'][:70]!r}  (ref {r['target'][:50]!r})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
