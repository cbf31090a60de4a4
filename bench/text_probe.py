"""Issue 10's lead for text: a regularised linear probe on a middle layer vs appkit's default head, two data sets.

Not a strategy appkit ships yet: this measures the one lever that closed the accuracy gap to full fine-tuning on
drug reviews, so that the next step (a "probe" strategy whose saved folder is a stock BERT classifier) is built on
numbers from more than one data set.

The probe: the packaged MiniLM-L6, frozen; for every text the layer-normalised mean of its tokens after each layer
l = 1..6 (what appkit's mean-pooling layer outputs at [CLS] when it sits after layer l); each feature
standardised on the training rows; an L2 logistic regression (scikit-learn). The layer and the regularisation C
are chosen by 5-fold stratified cross-validation on the training rows only (score: accuracy + macro-F1), then
refit on all of them. Such a probe folds into a stock model: keep layers 1..l, append the mean-pooling layer,
put the standardisation into the pooler's dense layer (tanh is linear at small scale) and the coefficients into
the classifier.

Peer: appkit's default, ``fine_tune(strategy="head")`` (its features, validation split and 30 epochs), on the
same rows; for drug reviews also the full fine-tune recorded by bench/finetune.py, when its results are there.
Each side timed once from a freshly loaded model (the probe's time: features of every layer + the
cross-validation + the refit).

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

C_GRID = (0.003, 0.01, 0.03, 0.1)


def data(name: str, seed: int):
    from appkit.samples import drug_reviews, icd10cm_chapters

    if name == "drug":
        return drug_reviews("train"), drug_reviews("test")
    df = icd10cm_chapters()
    chapters = df["label"].value_counts().index[:8]          # the 8 largest chapters, 60 train / 60 test each
    df = df[df["label"].isin(chapters)].groupby("label", group_keys=False).sample(120, random_state=seed)
    train = df.groupby("label", group_keys=False).head(60)
    return train.reset_index(drop=True), df.drop(train.index).reset_index(drop=True)


def layer_means(clf, texts: list[str]):
    """[texts, layers, width]: LayerNorm(mean of the unmasked tokens) after each pretrained layer."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    encoder, out = clf.model.base_model.eval(), []
    for i in range(0, len(texts), 32):
        batch = clf._collate(texts[i:i + 32])
        with torch.inference_mode():
            states = encoder(**batch, output_hidden_states=True).hidden_states[1:]
        m = batch["attention_mask"].unsqueeze(-1).float()
        means = torch.stack([(h * m).sum(1) / m.sum(1) for h in states], 1)
        out.append(F.layer_norm(means, means.shape[-1:], eps=clf.model.config.layer_norm_eps))
    return np.asarray(torch.cat(out))


def probe(train, test, seed: int) -> tuple[dict, float, dict]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import appkit
    from appkit.metrics import classification

    clf = appkit.load("text-classification", labels=sorted(train["label"].unique()))
    started = time.perf_counter()
    x, y = layer_means(clf, list(train["text"])), train["label"].astype(str).to_numpy()
    labels = sorted(set(y))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)

    def model(c):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))

    scores = {}
    for layer in range(x.shape[1]):
        for c in C_GRID:
            m = classification(y, cross_val_predict(model(c), x[:, layer], y, cv=folds), labels)
            scores[(layer + 1, c)] = m["accuracy"] + m["macro_f1"]
    layer, c = max(scores, key=scores.get)
    fitted = model(c).fit(x[:, layer - 1], y)
    seconds = time.perf_counter() - started
    pred = fitted.predict(layer_means(clf, list(test["text"]))[:, layer - 1])
    return classification(test["label"].astype(str).to_numpy(), pred, labels), seconds, {"layer": layer, "C": c}


def head(train, test, seed: int) -> tuple[dict, float]:
    import appkit

    clf = appkit.load("text-classification", labels=sorted(train["label"].unique()))
    started = time.perf_counter()
    clf.fine_tune(train, strategy="head", seed=seed, progress=False, output_dir=tempfile.mkdtemp(prefix="probe-head-"))
    seconds = time.perf_counter() - started
    return clf.evaluate(test).metrics, seconds


def recorded_full() -> dict | None:
    path = RESULTS / "finetune.json"
    if not path.exists():
        return None
    rows = [r for r in json.loads(path.read_text())["rows"] if r["task"].startswith("fine-tune text")]
    return rows[0] if rows else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="drug,icd")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    for name in args.sets.split(","):
        train, test = data(name, args.seed)
        p, p_s, chosen = probe(train, test, args.seed)
        h, h_s = head(train, test, args.seed)
        what = {"drug": "drug reviews", "icd": "ICD-10-CM chapters"}[name]
        print(f"{what}: {len(train)} train / {len(test)} test; probe chose layer {chosen['layer']}, C {chosen['C']}")
        print(f"  probe {p_s:6.1f} s  accuracy {p['accuracy']:.3f}  macro-F1 {p['macro_f1']:.3f}")
        print(f"  head  {h_s:6.1f} s  accuracy {h['accuracy']:.3f}  macro-F1 {h['macro_f1']:.3f}")
        rows.append({"task": f"fine-tune text, {what} ({len(train)} rows)",
                     "appkit": f"probe (layer {chosen['layer']} of 6, C {chosen['C']}, chosen by 5-fold CV)",
                     "peer": "head (appkit's default)", "appkit_s": round(p_s, 1), "peer_s": round(h_s, 1),
                     "quality": f"accuracy {p['accuracy']:.3f} vs {h['accuracy']:.3f}, "
                                f"macro_f1 {p['macro_f1']:.3f} vs {h['macro_f1']:.3f}",
                     "memory": "", "notes": "not shipped yet (issue 10's lead); 1 timed round each"})
        full = recorded_full() if name == "drug" else None
        if full:
            print(f"  full fine-tuning, recorded by bench/finetune.py: {full['peer_s']} s, {full['quality']} "
                  f"(its 'vs' side is full)")
    record("text_probe", rows)


if __name__ == "__main__":
    main()
