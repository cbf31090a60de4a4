"""Text's default strategy, "probe", against the previous default ("head") on two real data sets.

The probe (appkit/training.py, ``strategy="probe"``): the packaged MiniLM-L6 stays frozen; for every text the
layer-normalised mean of its tokens after each layer is computed once; an L2 logistic regression on one layer,
whose layer, regularisation C and class weighting are chosen by stratified 5-fold cross-validation on the
training rows (accuracy + macro-F1), refitted on all of them and written into a stock BERT classifier cut at
that layer. The head: the model's own classification layers trained for 30 epochs on the last layer's
mean-pooled vector, the best epoch of a 20% validation split kept. bench/finetune.py puts both beside full
fine-tuning on drug reviews; this script adds a second data set (ICD-10-CM chapters), so a default is not
chosen on one set.

Each side timed once from a freshly loaded model (features included), then evaluated on the test rows.

    python bench/text_probe.py [--sets drug,icd] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

from _fair import RESULTS, record

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def data(name: str, seed: int):
    from appkit.samples import drug_reviews, icd10cm_chapters

    if name == "drug":
        return drug_reviews("train"), drug_reviews("test")
    df = icd10cm_chapters()
    chapters = df["label"].value_counts().index[:8]          # the 8 largest chapters, 60 train / 60 test each
    df = df[df["label"].isin(chapters)].groupby("label", group_keys=False).sample(120, random_state=seed)
    train = df.groupby("label", group_keys=False).head(60)
    return train.reset_index(drop=True), df.drop(train.index).reset_index(drop=True)


def fit(strategy: str, train, test, seed: int) -> tuple[dict, float, dict]:
    import appkit

    clf = appkit.load("text-classification", labels=sorted(train["label"].unique()))
    started = time.perf_counter()
    run = clf.fine_tune(train, strategy=strategy, seed=seed, progress=False,
                        output_dir=tempfile.mkdtemp(prefix=f"bench-{strategy}-"))
    seconds = time.perf_counter() - started
    return clf.evaluate(test, progress=False).metrics, seconds, run.params


def recorded_full() -> dict | None:
    """A text row of bench/finetune.py (its peer is full fine-tuning), from a text-only run if there is one."""
    for name in ("finetune_text", "finetune"):
        path = RESULTS / f"{name}.json"
        rows = [r for r in json.loads(path.read_text())["rows"]
                if r["task"].startswith("fine-tune text") and not r["appkit"].startswith("tune")] if path.exists() else []
        if rows:
            return rows[0]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="drug,icd")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    for name in args.sets.split(","):
        train, test = data(name, args.seed)
        p, p_s, chosen = fit("probe", train, test, args.seed)
        h, h_s, _ = fit("head", train, test, args.seed)
        what = {"drug": "drug reviews", "icd": "ICD-10-CM chapters"}[name]
        print(f"{what}: {len(train)} train / {len(test)} test; probe chose layer {chosen['layer']}, C {chosen['C']}, "
              f"class weights {chosen['class_weights']}")
        print(f"  probe {p_s:6.1f} s  accuracy {p['accuracy']:.3f}  macro-F1 {p['macro_f1']:.3f}")
        print(f"  head  {h_s:6.1f} s  accuracy {h['accuracy']:.3f}  macro-F1 {h['macro_f1']:.3f}")
        rows.append({"task": f"fine-tune text, {what} ({len(train)} rows)",
                     "appkit": f"probe, the default (chose layer {chosen['layer']} of 6, C {chosen['C']:g}, "
                               f"class weights {chosen['class_weights']}, by 5-fold CV)",
                     "peer": "head (the previous default)", "appkit_s": round(p_s, 1), "peer_s": round(h_s, 1),
                     "quality": f"accuracy {p['accuracy']:.3f} vs {h['accuracy']:.3f}, "
                                f"macro_f1 {p['macro_f1']:.3f} vs {h['macro_f1']:.3f}",
                     "memory": "", "notes": "1 timed round each, features included"})
        full = recorded_full() if name == "drug" else None
        if full:
            print(f"  full fine-tuning, recorded by bench/finetune.py: {full['peer_s']} s, {full['quality']} "
                  f"(its 'vs' side is full)")
    record("text_probe", rows)


if __name__ == "__main__":
    main()
