"""Fine-tuning on real data: appkit's "head" strategy at its default settings vs full fine-tuning.

Fairness rule (bench/_fair.py keeps it): the same model, data and machine for every side; every side
warmed up; rounds interleaved; the median of at least 3 rounds; the peer in its default configuration
AND in its best documented one; any difference in decoding or precision printed beside the figure.

The peer is full fine-tuning (every weight trained, as transformers' Trainer does), run through appkit's
"full" strategy (the same Trainer settings: lr 5e-5, batch 16, 3 epochs, linear schedule): in float32
(Trainer's default precision) and in bf16 (its best documented setting where the CPU has native bf16).
"head" is appkit's CPU default: the frozen encoder's features computed once (timed: every round starts
from a fresh model), then only the classification head trained, at its default epochs and learning rate.
Prints seconds, test accuracy and macro-F1 of each (the quality differs: both are shown) and the ratios.

    python bench/text_finetune.py [--train-rows 600] [--max-length 256] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import warnings

from _fair import interleaved

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-rows", type=int, default=600, help="the first N of the 600 training reviews")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import appkit
    from appkit.metrics import majority_baseline
    from appkit.samples import drug_reviews
    from appkit.runtime import bf16_native
    from appkit.tasks.text_classification import TextClassification

    train, test = drug_reviews("train").head(args.train_rows), drug_reviews("test")
    bf16 = bf16_native("cpu")
    d = TextClassification.training
    # name -> (settings printed beside the figure, precision, strategy, appkit.load precision)
    sides = {
        "head (appkit default)": (f"{d.epochs['head']} epochs, lr {d.learning_rate['head']:g}, "
                                  f"batch {d.batch_size['head']}", "float32 head; bf16 features" if bf16
                                  else "float32", "head", "auto"),
        "full fine-tuning, float32": (f"{d.epochs['full']} epochs, lr {d.learning_rate['full']:g}, "
                                      f"batch {d.batch_size['full']}", "float32", "full", "float32"),
    }
    if bf16:
        sides["full fine-tuning, bf16"] = (sides["full fine-tuning, float32"][0], "bf16 (Trainer bf16=True)", "full", "auto")

    def fit(strategy, precision, data):
        clf = appkit.load("text-classification", max_length=args.max_length, precision=precision)
        out = tempfile.mkdtemp(prefix=f"bench-{strategy}-")
        clf.fine_tune(data, strategy=strategy, output_dir=out, progress=False, checkpoints=False)
        shutil.rmtree(out, ignore_errors=True)
        return clf

    print(f"{len(train)} training reviews, {len(test)} test reviews, max_length {args.max_length}; native bf16: {bf16}")
    warm = train.groupby("label").head(6)
    seconds, models, _ = interleaved(
        {k: (lambda s=s: fit(s[2], s[3], train)) for k, s in sides.items()}, rounds=args.rounds,
        warmups={k: (lambda s=s: fit(s[2], s[3], warm)) for k, s in sides.items()})
    print(f"\n{'how':<28}{'settings':<32}{'precision':<30}{'seconds':>9}{'accuracy':>10}{'macro-F1':>10}")
    for k, (settings, prec, _, _) in sides.items():
        m = models[k].evaluate(test, progress=False).metrics
        print(f"{k:<28}{settings:<32}{prec:<30}{seconds[k]:>9.1f}{m['accuracy']:>10.3f}{m['macro_f1']:>10.3f}")
    print(f"majority-class baseline accuracy {majority_baseline(list(train.label), list(test.label)):.3f}")
    for k in sides:
        if k.startswith("full"):
            print(f"head (its defaults) is {seconds[k] / seconds['head (appkit default)']:.1f}x faster than {k}")


if __name__ == "__main__":
    main()
