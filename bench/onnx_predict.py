"""Prediction through onnxruntime vs appkit's torch path, same model, same inputs.

Text: the packaged MiniLM-L6 with a head fine-tuned on 300 real drug reviews (a minute),
exported with task.export_onnx, then 500 real review texts of 1-8 sentences (``--length long``: whole
reviews, as bench/text_predict.py's long set). Image: the
packaged EfficientNet-Lite0 (ImageNet) on the clip-art product images. Each side: one warm-up,
then 3 interleaved rounds, median kept. Sides: appkit torch as loaded by default (bf16 autocast
where the CPU has native bf16), appkit torch in float32, and load(..., backend="onnx") (float32
onnxruntime behind appkit's own preprocessing and batching). Prints items/s, the ratio and how
often the labels agree, plus the export's parity check (max abs logit difference).

    python bench/onnx_predict.py [--task text|image|both] [--n 500] [--rounds 3] [--length mixed|short|long]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def trained_text_model(folder: Path) -> Path:
    import appkit
    from appkit.samples import drug_reviews

    clf = appkit.load("text-classification", labels=["negative", "neutral", "positive"])
    clf.fine_tune(drug_reviews("train").sample(300, random_state=0), epochs=10, progress=False)
    return clf.save(folder)


def compare(task: str, folder: Path, inputs: list, rounds: int) -> None:
    import appkit

    check = appkit.load(task, str(folder)).export_onnx(folder / "onnx")
    sides = {"appkit torch (default precision)": appkit.load(task, str(folder)),
             "appkit torch float32": appkit.load(task, str(folder), precision="float32"),
             "appkit onnxruntime (backend='onnx')": appkit.load(task, str(folder), backend="onnx")}
    labels = {name: [r["label"] for r in m.predict(inputs, progress=False)] for name, m in sides.items()}  # warm-up
    times = {name: [] for name in sides}
    for _ in range(rounds):    # interleaved: a busy shared machine slows every side alike
        for name, m in sides.items():
            t = time.perf_counter()
            m.predict(inputs, progress=False)
            times[name].append(time.perf_counter() - t)
    print(f"\n{task}: {len(inputs)} inputs; export check: max abs logit difference onnxruntime vs torch float32 "
          f"{check['max_abs_diff']:.2e}, labels agree {check['labels_agree']:.0%} of {check['checked']}")
    onnx_name = "appkit onnxruntime (backend='onnx')"
    for name in sides:
        med = statistics.median(times[name])
        agree = sum(a == b for a, b in zip(labels[name], labels[onnx_name])) / len(inputs)
        print(f"  {name:38s} {len(inputs) / med:8.1f} items/s  (median of {rounds}: {med:.2f} s)  "
              f"labels agree with onnx: {agree:.1%}")
    for name in list(sides)[:2]:
        print(f"  onnxruntime / {name}: {statistics.median(times[name]) / statistics.median(times[onnx_name]):.2f}x")


def main() -> None:
    from text_predict import SENTENCES, review_texts   # bench/text_predict.py: real review texts, their lengths

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["text", "image", "both"], default="both")
    ap.add_argument("--n", type=int, default=500, help="texts (images: at most the clip-art set)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--length", choices=list(SENTENCES), default="mixed",
                    help="text: sentences per text as in bench/text_predict.py (long: whole reviews)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
    if args.task in ("text", "both"):
        texts = review_texts(args.n, 0, args.length)
        compare("text-classification", trained_text_model(tmp / "text"), texts, args.rounds)
    if args.task in ("image", "both"):
        import appkit
        from appkit.samples import clipart_products

        folder = appkit.load("image-classification").save(tmp / "image")
        compare("image-classification", folder, list(clipart_products()["image"])[: min(args.n, 128)], args.rounds)


if __name__ == "__main__":
    main()
