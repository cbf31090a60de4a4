"""EvalReport: metrics with bootstrap intervals, per-class and per-slice tables, confusion, worst errors.

The task turns predictions into a table (``_eval_table``) and scores a table
(``_metrics``); everything else is shared, so every task's report looks alike.
A report is a snapshot: it holds what it shows (the table, the inputs, the worst
errors already rendered), never the live task, so fine-tuning the model again
does not change a report made before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

N_BOOT = 1000          # bootstrap resamples: intervals stable to about half a percentage point
_NOUNS = {"text": "texts", "image": "images", "audio": "recordings", "source": "sentences"}


class Metrics(dict):
    """A plain dict of exact values that prints rounded (4 significant digits) in a notebook or terminal."""

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: {_round(v)}" for k, v in self.items()) + "}"

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(repr(self))


def _round(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return repr(v)


@dataclass
class EvalReport:
    task: str
    model: str
    metrics: dict
    table: pd.DataFrame               # one row per evaluated example: input, reference, prediction, ...
    per_class: pd.DataFrame | None = None
    confusion: pd.DataFrame | None = None
    slices: pd.DataFrame | None = None
    baseline: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    intervals: dict = field(default_factory=dict)   # metric -> (low, high): bootstrap 95% interval
    labels: list | None = None
    kind: str = "text"                # what an input is: "text", "image", "audio" or "source" (translation)
    noun: str = "examples"            # how the summary names the items ("reviews", "invoices"): set it freely
    inputs: list = field(default_factory=list, repr=False)   # the evaluated inputs as given (explore shows them)
    order: list = field(default_factory=list, repr=False)    # rows, worst first
    worst_columns: list = field(default_factory=list, repr=False)
    worst_html: str = field(default="", repr=False)          # the 10 worst, rendered when the report was made
    runs_in: str = ""                 # the numeric path predictions took (precision), e.g. "float32"
    metric_info: dict = field(default_factory=dict, repr=False)   # metric -> Metric (plain words), from the task

    def worst(self, n: int = 10) -> pd.DataFrame:
        """The n examples the model got most wrong (most confident mistakes, or highest error rate)."""
        return self.table.iloc[self.order[:n]][self.worst_columns]

    def summary(self) -> str:
        """One plain-language sentence for a stakeholder: how often it is right, how sure we are, what it mixes up."""
        from .report import plain_summary

        return plain_summary(self)

    def plot_confusion(self, ax=None, normalize: bool = True):
        from .report import plot_confusion

        return plot_confusion(self, ax=ax, normalize=normalize)

    def plots(self) -> dict:
        """Every figure of the report as matplotlib Figures, by name (the same ones the HTML shows)."""
        from .report import report_figures

        return report_figures(self)

    def explore(self, *, page_size: int = 5):
        """An error browser widget: filter, sort by confidence, page through the examples."""
        from .widgets import explore

        return explore(self, page_size=page_size)

    def _repr_html_(self) -> str:
        from .report import render_report

        return render_report(self, standalone=False)

    def to_html(self, path: str | Path, *, examples: bool = True, title: str | None = None) -> Path:
        """One self-contained HTML file (plots inlined, nothing fetched) to send to stakeholders.

        examples=False leaves out the example texts/images, for data that must not leave the team.
        """
        from .report import render_report

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_report(self, standalone=True, examples=examples, title=title), encoding="utf-8")
        return path

    def __repr__(self) -> str:
        m = ", ".join(f"{k}={v:.4f}" for k, v in self.metrics.items() if isinstance(v, float))
        return f"<EvalReport {self.task} on {len(self.table)} examples: {m}>"


def build_report(task, df: pd.DataFrame, results: list, *, slices: list[str]) -> EvalReport:
    keep = [i for i, r in enumerate(results) if r is not None]
    skipped = [i for i, r in enumerate(results) if r is None]
    df = df.iloc[keep].reset_index(drop=True)
    table = task._eval_table(df, [results[i] for i in keep])
    for s in slices:
        table[s] = df[s].values
    metrics = Metrics(task._metrics(table))
    slice_tab = None
    if slices:
        rows = []
        for s in slices:
            for value, group in table.groupby(s, dropna=False):
                rows.append({"slice": s, "value": value, "n": len(group), **task._metrics(group, summary=True)})
        slice_tab = pd.DataFrame(rows)
    name = task.meta.get("catalogue") or task.meta.get("source") or type(task.model).__name__
    labels = list(task.labels) if getattr(task, "is_classifier", False) and task.labels else None
    report = EvalReport(task=task.task, model=str(name), metrics=metrics, table=table, slices=slice_tab,
                        skipped=skipped, labels=labels, kind=task.input_column,
                        noun=_NOUNS.get(task.input_column, "examples"), inputs=list(df[task.input_column]),
                        runs_in=task.runs_in, metric_info=dict(task.metric_info))
    task._report_extras(report)
    worst_all = task._worst(table, len(table))
    report.order = [table.index.get_loc(i) for i in worst_all.index]
    report.worst_columns = list(worst_all.columns)
    top = report.worst(10)
    report.worst_html = task._worst_html(top) if len(top) else ""
    report.intervals = bootstrap_intervals(table, metrics, labels)
    task.meta["last_evaluation"] = {"metrics": dict(metrics), "rows": len(table),
                                    "intervals": {k: list(v) for k, v in report.intervals.items()}}
    return report


# ---------------------------------------------------------------------- bootstrap intervals
def bootstrap_intervals(table: pd.DataFrame, metrics: dict, labels: list | None, *, n_boot: int = N_BOOT,
                        seed: int = 0) -> dict:
    """95% percentile intervals for each headline metric, from ``n_boot`` resamples of the rows (seeded).

    Each metric is recomputed exactly as the point estimate is (same formula, per-item statistics summed
    per resample), vectorised so a thousand resamples take well under a second."""
    n = len(table)
    if n < 2:
        return {}
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    draws: dict[str, np.ndarray] = {}
    if labels and "accuracy" in metrics:
        draws.update(_classification_draws(table, labels, idx, with_auc="roc_auc" in metrics))
    if "wer" in metrics or "cer" in metrics:
        draws.update(_speech_draws(table, idx))
    if "chrf" in metrics or "bleu" in metrics:
        draws.update(_translation_draws(table, idx))
    out = {}
    for k, d in draws.items():
        if k in metrics and np.isfinite(d).sum() >= n_boot // 2:
            lo, hi = np.nanpercentile(d, [2.5, 97.5])
            out[k] = (float(lo), float(hi))
    return out


def classification_stats(y_true: np.ndarray, y_pred: np.ndarray, k: int, idx: np.ndarray) -> dict:
    """accuracy / macro-F1 / weighted-F1 for each row of ``idx`` (a resample of positions), via confusion counts."""
    b, n = idx.shape
    codes = (np.arange(b)[:, None] * k * k + y_true[idx] * k + y_pred[idx]).ravel()
    cm = np.bincount(codes, minlength=b * k * k).reshape(b, k, k).astype(float)
    tp = np.einsum("bii->bi", cm)
    true_n, pred_n = cm.sum(2), cm.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(pred_n > 0, tp / pred_n, 0.0)
        rec = np.where(true_n > 0, tp / true_n, 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    return {"accuracy": tp.sum(1) / n, "macro_f1": f1.mean(1),
            "weighted_f1": (f1 * true_n).sum(1) / np.maximum(true_n.sum(1), 1)}


def _classification_draws(table: pd.DataFrame, labels: list, idx: np.ndarray, *, with_auc: bool) -> dict:
    k = len(labels)
    pos = {lab: i for i, lab in enumerate(labels)}
    y_true = np.array([pos[v] for v in table["reference"]])
    y_pred = np.array([pos[v] for v in table["prediction"]])
    out = classification_stats(y_true, y_pred, k, idx)
    out["calibration_error"] = _ece_draws(table["score"].to_numpy(float), table["correct"].to_numpy(float), idx)
    if with_auc:
        scores = np.array([[s.get(lab, 0.0) for lab in labels] for s in table["scores"]])
        out["roc_auc"] = _auc_draws(y_true, scores, k, idx)
    return out


def _ece_draws(conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, bins: int = 10) -> np.ndarray:
    """The same binned calibration error as the report's point estimate, per resample."""
    b, n = idx.shape
    edges = np.linspace(0, 1, bins + 1)
    bin_of = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    codes = (np.arange(b)[:, None] * bins + bin_of[idx]).ravel()
    conf_sum = np.bincount(codes, weights=conf[idx].ravel(), minlength=b * bins).reshape(b, bins)
    corr_sum = np.bincount(codes, weights=correct[idx].ravel(), minlength=b * bins).reshape(b, bins)
    return np.abs(conf_sum - corr_sum).sum(1) / n


def _auc_draws(y_true: np.ndarray, scores: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """ROC-AUC by ranks (Mann-Whitney), one-vs-rest averaged over classes as scikit-learn's macro ovr does."""
    from scipy.stats import rankdata

    classes = [1] if k == 2 else range(k)
    aucs = []
    for c in classes:
        pos = (y_true[idx] == c)
        ranks = rankdata(scores[:, c][idx], axis=1)
        n_pos, n_neg = pos.sum(1), (~pos).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = ((ranks * pos).sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        aucs.append(np.where((n_pos > 0) & (n_neg > 0), auc, np.nan))
    return np.mean(aucs, axis=0)


def _ratio_draws(errors: np.ndarray, lengths: np.ndarray, idx: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return errors[idx].sum(1) / lengths[idx].sum(1)


def _speech_draws(table: pd.DataFrame, idx: np.ndarray) -> dict:
    """Corpus WER/CER = all edits / all reference words (characters), so resample per-item counts."""
    import jiwer

    from .metrics import normalise_text

    counts = []
    for r, h in zip(table["reference"], table["prediction"]):
        r, h = normalise_text(str(r)), normalise_text(str(h))
        if not r:   # metrics.wer_cer leaves out empty references; so do the intervals
            counts.append((0, 0, 0, 0))
            continue
        w = jiwer.process_words(r, h)
        c = jiwer.process_characters(r, h)
        counts.append((w.substitutions + w.deletions + w.insertions, w.hits + w.substitutions + w.deletions,
                       c.substitutions + c.deletions + c.insertions, c.hits + c.substitutions + c.deletions))
    a = np.array(counts, dtype=float)
    out = {"wer": _ratio_draws(a[:, 0], a[:, 1], idx), "cer": _ratio_draws(a[:, 2], a[:, 3], idx)}
    if "wer" in table:
        out["sentence_error_rate"] = (table["wer"].to_numpy(float) > 0)[idx].mean(1)
    return out


def _translation_draws(table: pd.DataFrame, idx: np.ndarray) -> dict:
    """sacrebleu's corpus scores are computed from summed per-sentence statistics: resample those."""
    from sacrebleu.metrics import BLEU, CHRF

    refs, hyps = [str(x) for x in table["reference"]], [str(x) for x in table["prediction"]]
    out = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF())):
        stats = np.array(metric._extract_corpus_statistics(hyps, [refs]), dtype=float)
        out[name] = np.array([metric._compute_score_from_stats(list(stats[row].sum(0))).score for row in idx])
    return out


def compare(reports: dict, *, baseline: bool = True) -> pd.DataFrame:
    """Headline metrics of several reports on the same data side by side (one column per report).

    For classifiers ``baseline=True`` adds the column a model must beat to be worth anything: always
    answering the most common true label of the evaluated data (see :func:`_majority_column`)."""
    if not reports:
        raise ValueError("compare() needs at least one report, e.g. compare({'zero-shot': report})")
    columns = {name: dict(r.metrics) for name, r in reports.items()}
    first = next(iter(reports.values()))
    if baseline and "reference" in first.table and first.per_class is not None:
        refs = [str(v) for v in first.table["reference"]]
        top = pd.Series(refs).value_counts().index[0]
        columns[f"always {top!r}"] = _majority_column(refs, list(first.per_class["label"]))
    frame = pd.DataFrame(columns)
    order = [m for m in ("accuracy", "macro_f1", "calibration_error", "wer", "cer", "chrf", "bleu") if m in frame.index]
    return frame.loc[order + [m for m in frame.index if m not in order]]


def _majority_column(refs: list[str], labels: list[str]) -> dict:
    """The majority answer as a model that says it: every row gets the label shares of the evaluated data as its
    scores, so its top answer is the commonest label with that share as its confidence. Such a model is
    calibrated (confidence = accuracy) and ranks nothing (ROC-AUC 0.5): every cell of the column has a value,
    and the lesson reads off it, calibration alone is worth nothing without accuracy."""
    from .metrics import classification, expected_calibration_error

    shares = pd.Series(refs).value_counts(normalize=True).reindex(labels, fill_value=0.0).to_numpy(float)
    top = labels[int(shares.argmax())]
    scores = np.tile(shares, (len(refs), 1))
    out = classification(refs, [top] * len(refs), labels, scores=scores)
    correct = np.array([r == top for r in refs], dtype=float)
    out["calibration_error"] = expected_calibration_error(scores.max(1), correct)
    return out
