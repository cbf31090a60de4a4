"""Decision analysis on an evaluation report: which threshold to act on, and what it costs.

A model gives a probability; a business acts on a yes/no. These helpers turn a classification
``EvalReport`` (its per-example ``scores``) into the tables a manager decides from:

- ``costs_by_threshold``: the cost of missed cases (false negatives) and false alarms (false
  positives) at each threshold, and the threshold that minimises their sum;
- ``alert_budget``: with so many events a day and a team that can look at N alerts a day, which
  threshold fits the budget and what share of the real cases it still catches;
- ``refer_below``: decide automatically only when the model is confident enough, refer the
  rest to a person; the share referred and the accuracy of what is left.

Every table is computed on the evaluation data: the rates hold as far as that data looks like
what the model will see (the same mix of classes, the same sources).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import DataError, _msg, unknown_name


@dataclass
class Decision:
    """A decision table, the row it recommends and the sentence that says it in plain language."""
    table: pd.DataFrame
    best: dict
    summary: str
    x: str = field(repr=False, default="threshold")
    y: str = field(repr=False, default="cost")
    title: str = field(repr=False, default="")

    def plot(self, ax=None):
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(self.table[self.x], self.table[self.y], color="tab:blue")
        ax.axvline(self.best[self.x], color="tab:red", ls="--", lw=1)
        ax.scatter([self.best[self.x]], [self.best[self.y]], color="tab:red", zorder=3,
                   label=f"chosen: {self.x} = {self.best[self.x]:.2f}")
        ax.set_xlabel(self.x.replace("_", " "))
        ax.set_ylabel(self.y.replace("_", " "))
        ax.set_title(self.title)
        ax.legend(loc="best", fontsize=8)
        return ax

    def _repr_html_(self) -> str:
        import html

        return f"<p><b>{html.escape(self.summary)}</b></p>" + self.table.to_html(index=False, float_format="%.3f", max_rows=12)


def _classification_table(report) -> pd.DataFrame:
    table = getattr(report, "table", None)
    if table is None or "scores" not in table.columns:
        raise DataError(_msg("A decision analysis needs a classification report",
                             expected="the EvalReport of a text or image classifier (clf.evaluate(test))"))
    return table


def _positive_scores(report, positive: str) -> tuple[np.ndarray, np.ndarray]:
    """(is the reference the positive class, the model's probability of the positive class)."""
    table = _classification_table(report)
    labels = sorted({k for s in table["scores"] for k in s})
    if positive not in labels:
        raise unknown_name("positive label", positive, labels)
    y = (table["reference"].astype(str) == positive).to_numpy()
    p = np.array([s.get(positive, 0.0) for s in table["scores"]], dtype=float)
    return y, p


def _grid(steps: int) -> np.ndarray:
    return np.round(np.linspace(0.0, 1.0, steps), 4)


def _confusion_at(y: np.ndarray, p: np.ndarray, t: float) -> dict:
    flag = p >= t
    tp, fp = int((flag & y).sum()), int((flag & ~y).sum())
    fn, tn = int((~flag & y).sum()), int((~flag & ~y).sum())
    return {"threshold": float(t), "flagged": tp + fp, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "recall": tp / max(tp + fn, 1), "precision": tp / (tp + fp) if tp + fp else 1.0}


def costs_by_threshold(report, *, positive: str, cost_fn: float, cost_fp: float, steps: int = 101,
                       unit: str = "$") -> Decision:
    """The total cost of mistakes at each threshold on P(positive); ``best`` is the cheapest.

    cost_fn: what one missed positive costs (e.g. a phishing email that reaches a clerk);
    cost_fp: what one false alarm costs (e.g. a genuine email held back for a check).
    Ties go to the threshold nearest 0.5, the model's own default.
    """
    if cost_fn < 0 or cost_fp < 0:
        raise DataError(_msg("Costs must be zero or more", where=f"cost_fn={cost_fn}, cost_fp={cost_fp}"))
    y, p = _positive_scores(report, positive)
    rows = [_confusion_at(y, p, t) for t in _grid(steps)]
    table = pd.DataFrame(rows)
    table["cost"] = table.fn * cost_fn + table.fp * cost_fp
    cheapest = table[table.cost == table.cost.min()]
    best = cheapest.iloc[(cheapest.threshold - 0.5).abs().argmin()].to_dict()
    default = _confusion_at(y, p, 0.5)
    default_cost = default["fn"] * cost_fn + default["fp"] * cost_fp
    summary = (f"Acting when P({positive}) >= {best['threshold']:.2f} costs {unit}{best['cost']:,.0f} on these "
               f"{len(y)} examples ({int(best['fn'])} missed at {unit}{cost_fn:,.0f}, {int(best['fp'])} false alarms at "
               f"{unit}{cost_fp:,.0f}), against {unit}{default_cost:,.0f} at the default 0.50 and "
               f"{unit}{y.sum() * cost_fn:,.0f} with no model at all (every {positive} missed).")
    return Decision(table, best, summary, title=f"Cost of mistakes by threshold ({unit})")


def alert_budget(report, *, positive: str, events_per_day: float, budgets, steps: int = 201) -> Decision:
    """For each daily alert budget: the lowest threshold whose alerts fit in it, and what it catches.

    events_per_day: how many items (log lines, emails) arrive a day; the flagged share measured on
    the evaluation data is scaled to it. ``best`` is the largest budget's row.
    """
    y, p = _positive_scores(report, positive)
    budgets = sorted(float(b) for b in budgets)
    if not budgets or budgets[0] <= 0 or events_per_day <= 0:
        raise DataError(_msg("Budgets and events_per_day must be positive",
                             where=f"budgets={budgets}, events_per_day={events_per_day}"))
    grid = [_confusion_at(y, p, t) for t in _grid(steps)]
    rows = []
    for b in budgets:
        fits = [g for g in grid if g["flagged"] / len(y) * events_per_day <= b]
        g = fits[0] if fits else {**_confusion_at(y, p, 1.0 + 1e-9), "threshold": 1.0}
        rows.append({"alerts_budget": b, "threshold": g["threshold"],
                     "alerts_per_day": g["flagged"] / len(y) * events_per_day,
                     "share_caught": g["recall"], "share_real": g["precision"],
                     "missed_per_day": g["fn"] / len(y) * events_per_day})
    table = pd.DataFrame(rows)
    best = table.iloc[-1].to_dict()
    per_day = y.mean() * events_per_day
    summary = (f"With {events_per_day:,.0f} events a day (~{per_day:,.0f} of them {positive}), a budget of "
               f"{best['alerts_budget']:,.0f} alerts a day means acting at P({positive}) >= {best['threshold']:.2f}: "
               f"{best['share_caught']:.0%} of the {positive} events are caught, {best['share_real']:.0%} of the alerts "
               f"are real, and ~{best['missed_per_day']:,.0f} a day go unseen.")
    return Decision(table, best, summary, x="alerts_budget", y="share_caught", title="What a daily alert budget catches")


def refer_below(report, *, min_confidence: float, steps: int = 21) -> Decision:
    """Decide automatically when the model's confidence is at least ``min_confidence``, refer the rest.

    The table covers every confidence level (share referred, accuracy of the automatic decisions,
    errors left); ``best`` is the row at ``min_confidence``.
    """
    table = _classification_table(report)
    if not 0 <= min_confidence <= 1:
        raise DataError(_msg(f"min_confidence={min_confidence} is not a probability", expected="a number in 0..1"))
    conf = table["score"].to_numpy(dtype=float)
    ok = table["correct"].to_numpy(dtype=bool)
    levels = sorted(set(_grid(steps)) | {round(float(min_confidence), 4)})
    rows = []
    for c in levels:
        auto = conf >= c
        rows.append({"min_confidence": c, "share_referred": 1 - auto.mean(), "decided": int(auto.sum()),
                     "accuracy_decided": ok[auto].mean() if auto.any() else float("nan"),
                     "errors_decided": int((auto & ~ok).sum())})
    out = pd.DataFrame(rows)
    best = out[out.min_confidence == round(float(min_confidence), 4)].iloc[0].to_dict()
    summary = (f"Below {min_confidence:.0%} confidence the case goes to a person: {best['share_referred']:.0%} of "
               f"the {len(table)} cases are referred; the model decides the other {int(best['decided'])} with "
               f"{best['accuracy_decided']:.1%} accuracy (against {ok.mean():.1%} if it decided all), "
               f"{int(best['errors_decided'])} errors left unreviewed.")
    return Decision(out, best, summary, x="min_confidence", y="accuracy_decided",
                    title="Accuracy of the automatic decisions vs confidence required")


__all__ = ["Decision", "alert_budget", "costs_by_threshold", "refer_below"]
