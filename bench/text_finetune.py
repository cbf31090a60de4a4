"""Fine-tuning strategies on real data: "head" (train the head on features the frozen
encoder computes once) vs "full" (train every weight), same epochs, same data.

Peer: appkit's own "full" strategy, i.e. what transformers' Trainer does by default.
Prints time and test accuracy / macro-F1 of each, and the speed ratio (target: head >= 10x faster).

    python bench/text_finetune.py [--epochs 3] [--max-length 256]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--head-epochs", type=float, default=None, help="also run head with its own default epochs")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import appkit
    from appkit.samples import drug_reviews

    train, test = drug_reviews("train"), drug_reviews("test")
    rows = []
    runs = [("head", args.epochs), ("full", args.epochs)]
    if args.head_epochs:
        runs.insert(1, ("head", args.head_epochs))
    for strategy, epochs in runs:
        clf = appkit.load("text-classification", max_length=args.max_length)
        out = tempfile.mkdtemp(prefix=f"bench-{strategy}-")
        t0 = time.perf_counter()
        clf.fine_tune(train, strategy=strategy, epochs=epochs, output_dir=out, progress=False)
        seconds = time.perf_counter() - t0
        m = clf.evaluate(test, progress=False).metrics
        shutil.rmtree(out, ignore_errors=True)
        rows.append((strategy, epochs, seconds, m["accuracy"], m["macro_f1"]))
        print(f"{strategy:5s} epochs={epochs:<4g} {seconds:7.1f} s  accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}", flush=True)
    base = rows[0]
    full = rows[-1]
    from appkit.metrics import majority_baseline

    print(f"majority-class baseline accuracy {majority_baseline(list(train.label), list(test.label)):.3f}")
    print(f"head is {full[2] / base[2]:.1f}x faster than full (target >= 10x)")


if __name__ == "__main__":
    main()
