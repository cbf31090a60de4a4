"""EvalReport: metrics, per-class and per-slice tables, confusion, worst errors.

The task turns predictions into a table (``_eval_table``) and scores a table
(``_metrics``); everything else is shared, so every task's report looks alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


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
    _task: Any = field(default=None, repr=False)

    def worst(self, n: int = 10) -> pd.DataFrame:
        """The n examples the model got most wrong (most confident mistakes, or highest error rate)."""
        return self._task._worst(self.table, n)

    def plot_confusion(self, ax=None, normalize: bool = True):
        from .report import plot_confusion

        return plot_confusion(self, ax=ax, normalize=normalize)

    def _repr_html_(self) -> str:
        from .report import render_report

        return render_report(self, standalone=False)

    def to_html(self, path: str | Path, *, examples: bool = True, title: str | None = None) -> Path:
        """A self-contained HTML file (plots inlined) to send to stakeholders.

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
    metrics = task._metrics(table)
    slice_tab = None
    if slices:
        rows = []
        for s in slices:
            for value, group in table.groupby(s, dropna=False):
                rows.append({"slice": s, "value": value, "n": len(group), **task._metrics(group, summary=True)})
        slice_tab = pd.DataFrame(rows)
    name = task.meta.get("catalogue") or task.meta.get("source") or type(task.model).__name__
    report = EvalReport(task=task.task, model=str(name), metrics=metrics, table=table, slices=slice_tab,
                        skipped=skipped, _task=task)
    task._report_extras(report)
    task.meta["last_evaluation"] = {"metrics": metrics, "rows": len(table)}
    return report


def compare(reports: dict, *, baseline: bool = True) -> pd.DataFrame:
    """Headline metrics of several reports on the same data side by side (one column per report).

    For classifiers ``baseline=True`` adds the column a model must beat to be worth anything: always
    answering the most common true label of the evaluated data."""
    if not reports:
        raise ValueError("compare() needs at least one report, e.g. compare({'zero-shot': report})")
    columns = {name: dict(r.metrics) for name, r in reports.items()}
    first = next(iter(reports.values()))
    if baseline and "reference" in first.table and first.per_class is not None:
        from .metrics import classification

        refs = [str(v) for v in first.table["reference"]]
        top = pd.Series(refs).value_counts().index[0]
        columns[f"always {top!r}"] = classification(refs, [top] * len(refs), list(first.per_class["label"]))
    frame = pd.DataFrame(columns)
    order = [m for m in ("accuracy", "macro_f1", "calibration_error", "wer", "cer", "chrf", "bleu") if m in frame.index]
    return frame.loc[order + [m for m in frame.index if m not in order]]
