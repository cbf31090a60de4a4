"""Prediction throughput: appkit vs transformers.pipeline("text-classification"), same saved model, same texts.

Peers: the pipeline with its defaults, and with batch_size=32. appkit sorts texts by
length and pads per batch, runs under torch.inference_mode and, where the CPU has native
bfloat16 (AVX512-BF16 / AMX), under bf16 autocast. Prints texts/s of each, the ratios
(targets: >= 2x the default pipeline, >= 1.2x the pipeline at batch 32) and how often
the labels agree.

    python bench/text_predict.py [--n 2000] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def mixed_length_texts(n: int, seed: int) -> list[str]:
    """Real drug reviews cut to 1-8 sentences, so lengths vary as in real use."""
    from appkit.samples import drug_reviews

    rng = random.Random(seed)
    sentences = [re.split(r"(?<=[.!?])\s+", t) for t in drug_reviews().text]
    out = []
    while len(out) < n:
        s = rng.choice(sentences)
        k = rng.randint(1, 8)
        start = rng.randint(0, max(0, len(s) - k))
        out.append(" ".join(s[start:start + k]))
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    import appkit
    from appkit.samples import drug_reviews

    hf_logging.set_verbosity_error()
    texts = mixed_length_texts(args.n, args.seed)
    folder = os.path.join(tempfile.mkdtemp(prefix="bench-text-"), "model")
    clf = appkit.load("text-classification")
    clf.fine_tune(drug_reviews("train").head(200), strategy="head", epochs=10, progress=False,
                  output_dir=os.path.join(folder, "..", "run"))
    clf.save(folder)
    print(f"{len(texts)} texts, {sum(map(len, texts)) / len(texts):.0f} characters on average; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {folder}")

    ours = appkit.load("text-classification", folder)
    ours.predict(texts[:16])                                 # warm-up, as for the peers
    res, t_ours = timed(lambda: ours.predict(texts, progress=False))
    ours32 = appkit.load("text-classification", folder, precision="float32")
    res32, t_ours32 = timed(lambda: ours32.predict(texts, progress=False))
    pipe = pipeline("text-classification", model=folder, device="cpu")
    pipe(texts[:16])
    ref, t_pipe = timed(lambda: pipe(texts, truncation=True))
    ref32, t_pipe32 = timed(lambda: pipe(texts, batch_size=32, truncation=True))

    def agree(a, b):
        return sum(x["label"] == y["label"] for x, y in zip(a, b)) / len(a)

    rows = [("transformers.pipeline (defaults)", t_pipe), ("transformers.pipeline (batch_size=32)", t_pipe32),
            ("appkit float32", t_ours32), ("appkit (auto precision)", t_ours)]
    for name, t in rows:
        print(f"{name:40s} {len(texts) / t:8.1f} texts/s")
    print(f"appkit vs pipeline defaults:      {t_pipe / t_ours:.2f}x (target >= 2x)")
    print(f"appkit vs pipeline batch_size=32: {t_pipe32 / t_ours:.2f}x (target >= 1.2x)")
    print(f"appkit float32 vs pipeline defaults: {t_pipe / t_ours32:.2f}x")
    print(f"labels agree with the pipeline: float32 {agree(res32, ref):.2%}, auto precision {agree(res, ref):.2%}")


if __name__ == "__main__":
    main()
