"""Prediction throughput: appkit vs transformers.pipeline("text-classification"), same saved model, same texts.

Fairness rule (bench/_fair.py keeps it): the same model, data and machine for every side; every side
warmed up; rounds interleaved; the median of at least 3 rounds; the peer in its default configuration
AND in its best documented one; any difference in decoding or precision printed beside the figure.

Peers: the pipeline with its defaults (float32, one text at a time), with batch_size=--batch-size, and at
its best documented setting here: the model in bfloat16 (`dtype=torch.bfloat16`, where the CPU has native
bf16) with the same batch size, and unbatched in bf16. appkit sorts texts by length and pads per batch
(at most 64 texts and ~4,096 tokens a batch), runs under torch.inference_mode and, where the CPU has native bf16,
runs a bf16 copy of the encoder with the head in float32 (the pipeline's bf16 casts the whole model). Prints texts/s of each, the ratios and how
often the labels agree with the float32 pipeline.

    python bench/text_predict.py [--n 2000] [--seed 0] [--length short|mixed|long] [--rounds 3] [--batch-size 64]
"""
from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import warnings

from _fair import interleaved, record

os.environ.setdefault("HF_HUB_OFFLINE", "1")


SENTENCES = {"short": (1, 2), "mixed": (1, 8), "long": (8, 10_000)}   # sentences per text ("long": whole reviews)


def review_texts(n: int, seed: int, length: str = "mixed") -> list[str]:
    """Real drug reviews cut to a run of sentences (`length`: short 1-2, mixed 1-8, long = the whole review),
    so lengths vary as in real use."""
    from appkit.samples import drug_reviews

    rng = random.Random(seed)
    lo, hi = SENTENCES[length]
    sentences = [re.split(r"(?<=[.!?])\s+", t) for t in drug_reviews().text]
    out = []
    while len(out) < n:
        s = rng.choice(sentences)
        k = rng.randint(lo, max(lo, min(hi, len(s))))
        start = rng.randint(0, max(0, len(s) - k))
        out.append(" ".join(s[start:start + k]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--length", choices=list(SENTENCES), default="mixed",
                    help="short: 1-2 sentences, mixed: 1-8, long: whole reviews")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="the pipeline's batch_size (appkit's default is 64)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import appkit
    from appkit.samples import drug_reviews
    from appkit.runtime import bf16_native

    hf_logging.set_verbosity_error()
    texts = review_texts(args.n, args.seed, args.length)
    folder = os.path.join(tempfile.mkdtemp(prefix="bench-text-"), "model")
    clf = appkit.load("text-classification")
    clf.fine_tune(drug_reviews("train").head(200), strategy="head", epochs=10, progress=False,
                  output_dir=os.path.join(folder, "..", "run"))
    clf.save(folder)
    bf16 = bf16_native("cpu")
    best = "bf16 weights" if bf16 else "float32"
    avg_chars = sum(map(len, texts)) / len(texts)
    print(f"{len(texts)} texts ({args.length}), {avg_chars:.0f} characters on average; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; native bf16: {bf16}; model {folder}")

    ours = appkit.load("text-classification", folder)
    ours32 = appkit.load("text-classification", folder, precision="float32")
    pipe = pipeline("text-classification", model=folder, device="cpu")
    pipe16 = pipeline("text-classification", model=folder, device="cpu", dtype=torch.bfloat16 if bf16 else torch.float32)
    bs = args.batch_size
    # name -> (batching, precision, run on some texts)
    sides = {
        "pipeline defaults": ("1 text/call", "float32", lambda t: pipe(t, truncation=True)),
        f"pipeline batch_size={bs}": (f"batch {bs}", "float32", lambda t: pipe(t, batch_size=bs, truncation=True)),
        f"pipeline {best}": ("1 text/call", best, lambda t: pipe16(t, truncation=True)),
        f"pipeline {best} batch_size={bs}": (f"batch {bs}", best, lambda t: pipe16(t, batch_size=bs, truncation=True)),
        "appkit float32": ("sorted, <= 64", "float32", lambda t: ours32.predict(t, progress=False)),
        "appkit (auto precision)": ("sorted, <= 64", "bf16 encoder" if bf16 else "float32",
                                    lambda t: ours.predict(t, progress=False)),
    }
    memory: dict[str, float] = {}
    seconds, out, _ = interleaved({k: (lambda f=f: f(texts)) for k, (_, _, f) in sides.items()}, rounds=args.rounds,
                                  warmups={k: (lambda f=f: f(texts[:64])) for k, (_, _, f) in sides.items()},
                                  memory=memory)

    def agree(a, b):
        return sum(x["label"] == y["label"] for x, y in zip(a, b)) / len(a)

    ref = out["pipeline defaults"]
    print(f"\n{'how':<40}{'batching':<18}{'precision':<15}{'texts/s':>9}{'labels = pipeline fp32':>24}{'memory MB':>11}")
    for k, (batching, prec, _) in sides.items():
        print(f"{k:<40}{batching:<18}{prec:<15}{len(texts) / seconds[k]:>9.1f}{agree(out[k], ref):>24.2%}"
              f"{memory[k]:>11.0f}")
    peers = [k for k in sides if k.startswith("pipeline")]
    best_peer = min(peers, key=seconds.get)
    rows = []
    for a in ("appkit (auto precision)", "appkit float32"):
        for b in ("pipeline defaults", best_peer):
            print(f"{a} ({sides[a][1]}) vs {b} ({sides[b][1]}): {seconds[b] / seconds[a]:.2f}x")
            if a == "appkit (auto precision)":
                rows.append({"task": f"text predict, {args.length} ({len(texts)} reviews, {avg_chars:.0f} chars)",
                             "appkit": f"predict ({sides[a][1]})", "peer": f"{b} ({sides[b][0]}, {sides[b][1]})",
                             "appkit_s": round(seconds[a], 1), "peer_s": round(seconds[b], 1),
                             "quality": f"{agree(out[a], ref):.1%} vs {agree(out[b], ref):.1%} same labels as fp32 pipeline",
                             "memory": f"{memory[a]:.0f} vs {memory[b]:.0f} MB", "notes": "same model folder"})
    # a CPU without native bf16 runs appkit in float32: a different result, recorded beside the bf16 one
    record(f"text_predict_{args.length}" + ("" if bf16 else "_float32_cpu"), rows)


if __name__ == "__main__":
    main()
