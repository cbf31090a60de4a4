"""Image prediction throughput: appkit vs a plain torch loop (and transformers.pipeline) on the same model.

Fairness rule (bench/_fair.py keeps it): the same model, data and machine for every side; every side
warmed up; rounds interleaved; the median of at least 3 rounds; the peer in its default configuration
AND in its best documented one; any difference in decoding or precision printed beside the figure.

The plain loop is what a user writes by hand: PIL open -> the model's own preprocessing
-> model in inference_mode, batch 32. All sides run the same weights, images and precision;
rounds are interleaved so a busy shared machine slows every side alike, and the median is kept.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/image_predict.py                 # packaged EfficientNet-Lite0
    HF_HUB_OFFLINE=1 .venv/bin/python bench/image_predict.py --model <folder or hub id> --images 64
Target: appkit >= 0.9x the plain loop.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import warnings

from _fair import interleaved, record

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="catalogue name, folder or hub id (default: efficientnet-lite0)")
    ap.add_argument("--images", type=int, default=64, help="how many clip-art images")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--no-pipeline", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    import appkit
    from appkit.samples import clipart_products

    paths = list(clipart_products()["image"])[: args.images]
    clf = appkit.load("image-classification", args.model, precision=args.precision)
    model, processor = clf.model.eval(), clf.processor
    bf16 = args.precision == "bfloat16"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def plain() -> list[int]:
        out = []
        with torch.inference_mode(), autocast():
            for k in range(0, len(paths), args.batch_size):
                images = [Image.open(p).convert("RGB") for p in paths[k:k + args.batch_size]]
                x = torch.from_numpy(np.asarray(processor(images=images, return_tensors="np")["pixel_values"]))
                out += model(pixel_values=x).logits.softmax(-1).argmax(-1).tolist()
        return out

    def ours(batch_size=None) -> list[int]:
        res = clf.predict(paths, batch_size=batch_size, progress=False)
        return [clf.labels.index(r["label"]) for r in res]

    # appkit at its default batch (what a user gets) and at the loop's batch (like for like)
    sides = {"plain torch loop": plain, "appkit": ours, f"appkit batch {args.batch_size}": lambda: ours(args.batch_size)}
    if not args.no_pipeline:
        from transformers import pipeline

        pipe = pipeline("image-classification", model=model, image_processor=processor, device="cpu")

        def via_pipeline(**batching) -> list[int]:
            with autocast():
                res = pipe(paths, top_k=1, **batching)
            return [clf.labels.index(r[0]["label"]) for r in res]

        sides["pipeline defaults (1 image/call)"] = via_pipeline
        sides["transformers.pipeline"] = lambda: via_pipeline(batch_size=args.batch_size)

    # every side warmed up (oneDNN picks kernels on the first call), rounds interleaved, median kept
    memory: dict[str, float] = {}
    secs, preds, _ = interleaved(sides, rounds=args.rounds, warmups=sides, memory=memory)
    agree = {n: float(np.mean(np.array(p) == np.array(preds["plain torch loop"]))) for n, p in preds.items()}
    rate = {n: len(paths) / t for n, t in secs.items()}
    print(f"model {clf.meta.get('catalogue') or clf.meta.get('source')}, {len(paths)} images, batch {args.batch_size}, "
          f"{args.precision}, torch threads {torch.get_num_threads()}, {args.rounds} interleaved rounds (median)")
    for name in sides:
        print(f"  {name:34s} {rate[name]:7.1f} images/s   same top-1 as plain loop: {agree[name]:.0%}   "
              f"working memory {memory[name]:.0f} MB")
    print(f"appkit / plain loop: {rate['appkit'] / rate['plain torch loop']:.2f}x (target >= 0.9x)")
    if "transformers.pipeline" in rate:
        print(f"appkit / pipeline batch {args.batch_size}: {rate['appkit'] / rate['transformers.pipeline']:.2f}x; "
              f"/ pipeline defaults: {rate['appkit'] / rate['pipeline defaults (1 image/call)']:.2f}x (all {args.precision})")
    peers = [p for p in ("plain torch loop", "pipeline defaults (1 image/call)", "transformers.pipeline") if p in secs]
    record(f"image_predict_{args.precision}", [{
        "task": f"image predict ({len(paths)} clip-art images)", "appkit": f"predict ({args.precision})",
        "peer": f"{p} ({args.precision})", "appkit_s": round(secs["appkit"], 2), "peer_s": round(secs[p], 2),
        "quality": f"{agree['appkit']:.0%} vs {agree[p]:.0%} same top-1 as the plain loop",
        "memory": f"{memory['appkit']:.0f} vs {memory[p]:.0f} MB",
        "notes": f"appkit batch {clf.default_batch_size} (its default), peer batch {args.batch_size}"}
        for p in peers])


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        main()
