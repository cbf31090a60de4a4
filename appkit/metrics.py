"""Metrics, computed by the libraries people already trust (scikit-learn, jiwer, sacrebleu)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def classification(y_true: list[str], y_pred: list[str], labels: list[str], scores: np.ndarray | None = None) -> dict:
    """accuracy, macro/weighted F1, and ROC-AUC when class scores are given."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
    }
    present = sorted(set(y_true))
    if scores is not None and len(present) >= 2 and set(present) <= set(labels):
        try:
            if len(labels) == 2:
                out["roc_auc"] = float(roc_auc_score([y == labels[1] for y in y_true], scores[:, 1]))
            elif len(present) == len(labels):
                out["roc_auc"] = float(roc_auc_score(y_true, scores, labels=labels, multi_class="ovr", average="macro"))
        except ValueError:
            pass  # undefined for this sample (e.g. one class only); leave it out rather than guess
    return out


def per_class(y_true: list[str], y_pred: list[str], labels: list[str]) -> pd.DataFrame:
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return pd.DataFrame({"label": labels, "precision": p, "recall": r, "f1": f, "support": s})


def confusion(y_true: list[str], y_pred: list[str], labels: list[str]) -> pd.DataFrame:
    from sklearn.metrics import confusion_matrix

    m = confusion_matrix(y_true, y_pred, labels=labels)
    return pd.DataFrame(m, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))


def majority_baseline(y_train: list[str], y_test: list[str]) -> float:
    """Accuracy of always answering the most common training label: the bar any model must clear."""
    top = pd.Series(y_train).value_counts().idxmax()
    return float(np.mean([y == top for y in y_test]))


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> str:
    """12 -> 'twelve', 305 -> 'three hundred five': digits and words score alike in WER."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + _number_words(n % 100))
    return _number_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + _number_words(n % 1000))


_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
            "twelve": "twelfth"}


def _ordinal_words(n: int) -> str:
    """15 -> 'fifteenth', 21 -> 'twenty first': '15th' and 'fifteenth' score alike in WER."""
    *head, last = _number_words(n).split()
    last = _ORDINAL.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return " ".join([*head, last])


def normalise_text(s: str) -> str:
    """Lower case, numbers and ordinals as words, no punctuation but apostrophes: what WER/CER compare."""
    import re

    s = s.lower().replace("’", "'")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)                     # 1,000 -> 1000
    s = re.sub(r"\b(\d{1,6})(?:st|nd|rd|th)\b", lambda m: " " + _ordinal_words(int(m.group(1))) + " ", s)
    s = re.sub(r"\b\d{1,6}\b", lambda m: " " + _number_words(int(m.group())) + " ", s)
    s = re.sub(r"[^\w\s']", " ", s)
    return " ".join(w.strip("'") for w in s.split() if w.strip("'"))


def wer_cer(refs: list[str], hyps: list[str], *, normalise: bool = True) -> dict:
    import jiwer

    if normalise:
        refs = [normalise_text(r) for r in refs]
        hyps = [normalise_text(h) for h in hyps]
    # jiwer refuses empty references; an empty reference scores by insertions only
    pairs = [(r, h) for r, h in zip(refs, hyps) if r]
    if not pairs:
        return {"wer": float("nan"), "cer": float("nan")}
    r, h = zip(*pairs)
    return {"wer": float(jiwer.wer(list(r), list(h))), "cer": float(jiwer.cer(list(r), list(h)))}


# languages written without spaces between words: BLEU counts words, so they need their own tokenizer
_ISO2 = {"zho": "zh", "cmn": "zh", "yue": "zh", "jpn": "ja", "kor": "ko", "tha": "th", "lao": "lo", "khm": "km",
         "mya": "my"}


def bleu_tokenizer(target_lang: str | None) -> str:
    """sacreBLEU's tokenizer for a target language code ('de', 'zh_CN', 'jpn_Jpan', 'ja'): Chinese its own, Japanese
    and Korean MeCab where installed (sacrebleu[ja] / sacrebleu[ko]) else characters, Thai, Lao, Khmer and
    Burmese characters, every other language the standard '13a'."""
    iso = _ISO2.get(str(target_lang or "").lower().replace("-", "_").split("_")[0],
                    str(target_lang or "").lower().replace("-", "_").split("_")[0])
    if iso == "zh":
        return "zh"
    if iso in ("ja", "ko"):
        return f"{iso}-mecab" if _mecab_works(iso) else "char"
    return "char" if iso in ("th", "lo", "km", "my") else "13a"


def _mecab_works(iso: str) -> bool:
    from sacrebleu.metrics.bleu import BLEU

    try:
        BLEU(tokenize=f"{iso}-mecab")
        return True
    except Exception:     # MeCab or its dictionary not installed
        return False


def bleu_chrf(refs: list[str], hyps: list[str], *, target_lang: str | None = None) -> dict:
    """Corpus BLEU (tokenized for the target language: ``bleu_tokenizer``) and chrF."""
    import sacrebleu

    bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize=bleu_tokenizer(target_lang))
    return {"bleu": float(bleu.score), "chrf": float(sacrebleu.corpus_chrf(hyps, [refs]).score)}


def expected_calibration_error(conf, correct, bins: int = 10) -> float:
    """Expected calibration error: confidence vs accuracy, averaged over confidence bins."""
    import numpy as np

    if len(conf) == 0:
        return float("nan")
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(total)
