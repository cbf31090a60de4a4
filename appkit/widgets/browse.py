"""``report.explore()``: page through a report's examples, filtered and sorted, with their content;
for a classifier, a threshold and error costs that move precision, recall and cost live."""
from __future__ import annotations

import base64
import html
import os

import numpy as np
import pandas as pd

from ..report import notebook_safe
from ._static import WithStaticCopy

ALL = "(all)"
_SORTS = {"worst first": "worst", "most confident first": "conf_desc", "least confident first": "conf_asc",
          "in order": "order"}


def content_html(kind: str, item, *, text_limit: int = 600) -> str:
    """One input as a reader sees it: text, a thumbnail, or an audio player."""
    if kind == "image":
        from ..media import thumbnail_html

        return thumbnail_html(item)
    if kind == "audio":
        return audio_html(item)
    s = str(item)
    return html.escape(s if len(s) <= text_limit else s[:text_limit] + "…")


def audio_html(item, max_bytes: int = 8_000_000) -> str:
    """An <audio> player with the recording inline (files up to 8 MB; longer ones are named, not embedded)."""
    path = item.get("path") if isinstance(item, dict) else item
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path) and os.path.getsize(path) <= max_bytes:
        ext = os.path.splitext(str(path))[1].lstrip(".").lower() or "wav"
        mime = {"mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac"}.get(ext, "audio/wav")
        data = base64.b64encode(open(path, "rb").read()).decode()
        return (f'<audio controls preload="none" src="data:{mime};base64,{data}"></audio>'
                f"<br><small>{html.escape(os.path.basename(str(path)))}</small>")
    return html.escape(str(path) if isinstance(path, (str, os.PathLike)) else f"<{type(item).__name__} audio>")


def threshold_stats(y_true_pos: np.ndarray, p_pos: np.ndarray, threshold: float, *, cost_fp: float,
                    cost_fn: float) -> dict:
    """Precision, recall and error cost of calling an item positive when its score reaches ``threshold``."""
    called = p_pos >= threshold
    tp = int((called & y_true_pos).sum())
    fp = int((called & ~y_true_pos).sum())
    fn = int((~called & y_true_pos).sum())
    return {"threshold": threshold, "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"), "false_positives": fp, "false_negatives": fn,
            "cost": fp * cost_fp + fn * cost_fn}


def cheapest_threshold(y_true_pos: np.ndarray, p_pos: np.ndarray, *, cost_fp: float, cost_fn: float) -> float:
    grid = np.round(np.linspace(0.01, 0.99, 99), 2)
    costs = [threshold_stats(y_true_pos, p_pos, t, cost_fp=cost_fp, cost_fn=cost_fn)["cost"] for t in grid]
    return float(grid[int(np.argmin(costs))])


class Explorer(WithStaticCopy):
    """The error browser; its controls are attributes so tests and users can drive it from code."""

    def __init__(self, report, *, page_size: int = 5):
        import ipywidgets as w

        self.report, self.page_size, self.page = report, page_size, 0
        self.title = f"Error browser: {report.task} · {len(report.table)} examples"
        t = report.table
        self.is_classifier = report.labels is not None and "score" in t
        labels = [ALL, *report.labels] if self.is_classifier else [ALL]
        self.true_label = w.Dropdown(options=labels, value=ALL, description="true")
        self.pred_label = w.Dropdown(options=labels, value=ALL, description="predicted")
        self.which = w.ToggleButtons(options=["errors", "right", "all"], value="errors" if self._has_errors() else "all")
        slice_cols = list(report.slices["slice"].unique()) if report.slices is not None else []
        self.slice = w.Dropdown(options=[ALL] + [f"{c}={v}" for c in slice_cols for v in sorted(t[c].dropna().unique(), key=str)],
                                value=ALL, description="slice")
        sorts = list(_SORTS) if self.is_classifier else ["worst first", "in order"]
        self.sort = w.Dropdown(options=sorts, value="worst first", description="sort")
        self.prev, self.next = w.Button(description="◀ previous"), w.Button(description="next ▶")
        self.position = w.HTML()
        self.items = w.HTML()
        for c in (self.true_label, self.pred_label, self.which, self.slice, self.sort):
            c.observe(self._refilter, names="value")
        self.prev.on_click(lambda _b: self._turn(-1))
        self.next.on_click(lambda _b: self._turn(+1))
        rows = [w.HBox([self.which, self.sort]), w.HBox([self.true_label, self.pred_label, self.slice]) if self.is_classifier
                else w.HBox([self.slice]), w.HBox([self.prev, self.next, self.position]), self.items]
        if self.is_classifier:
            rows.append(self._threshold_panel(w))
        self.widget = w.VBox([w.HTML(f"<b>{html.escape(self.title)}</b>"), *rows])
        self._refilter()

    def _has_errors(self) -> bool:
        t = self.report.table
        return bool((~t["correct"]).any()) if "correct" in t else len(self.report.order) > 0

    # -- filtering and paging
    def selection(self) -> pd.DataFrame:
        t = self.report.table.assign(_row=np.arange(len(self.report.table)))
        if "correct" in t:
            if self.which.value == "errors":
                t = t[~t.correct]
            elif self.which.value == "right":
                t = t[t.correct]
        elif self.which.value == "errors":
            t = t[t["_row"].isin(self.report.order)]
        if self.true_label.value != ALL:
            t = t[t.reference == self.true_label.value]
        if self.pred_label.value != ALL:
            t = t[t.prediction == self.pred_label.value]
        if self.slice.value != ALL:
            col, val = self.slice.value.split("=", 1)
            t = t[t[col].astype(str) == val]
        how = _SORTS[self.sort.value]
        if how == "conf_desc":
            t = t.sort_values("score", ascending=False, kind="stable")
        elif how == "conf_asc":
            t = t.sort_values("score", ascending=True, kind="stable")
        elif how == "worst":
            rank = {r: i for i, r in enumerate(self.report.order)}
            t = t.assign(_rank=t["_row"].map(lambda r: rank.get(r, len(rank) + r))).sort_values("_rank", kind="stable")
        return t

    def _refilter(self, _change=None) -> None:
        self.page = 0
        self._show()

    def _turn(self, step: int) -> None:
        pages = max(1, -(-len(self.selection()) // self.page_size))
        self.page = min(max(self.page + step, 0), pages - 1)
        self._show()

    def _show(self) -> None:
        sel = self.selection()
        n = len(sel)
        start = self.page * self.page_size
        shown = sel.iloc[start:start + self.page_size]
        self.prev.disabled = self.page == 0
        self.next.disabled = start + self.page_size >= n
        self.position.value = f"items {start + 1 if n else 0}-{min(start + self.page_size, n)} of {n}"
        self.items.value = notebook_safe('<div class="tex2jax_ignore mathjax_ignore">'
                                         + "".join(self._card(r) for _, r in shown.iterrows()) + "</div>")
        self._refresh_copy()

    def static_body(self) -> str:
        stats = f"<p>{self.stats.value}</p>" if self.is_classifier else ""
        return (f"<p>{html.escape(self.which.value)}, {html.escape(self.sort.value)}: "
                f"{html.escape(self.position.value)}</p>{self.items.value}{stats}")

    def _card(self, r) -> str:
        rep = self.report
        content = content_html(rep.kind, rep.inputs[int(r["_row"])] if rep.inputs else r["input"])
        lines = []
        if rep.kind == "source":
            lines.append(f"<b>source</b>: {content}")
        elif rep.kind == "audio":
            lines.append(content)
        else:
            lines.append(f'<div style="text-align:left">{content}</div>')
        lines.append(f"<b>reference</b>: {html.escape(str(r['reference']))} · <b>prediction</b>: "
                     f"{html.escape(str(r['prediction']))}")
        extra = [f"confidence {r['score']:.1%}" if "score" in r else None,
                 f"WER {r['wer']:.2f}" if "wer" in r else None, f"chrF {r['chrf']:.1f}" if "chrf" in r else None]
        extra = [e for e in extra if e]
        if extra:
            lines[-1] += " · " + " · ".join(extra)
        border = "#D55E00" if ("correct" in r and not r["correct"]) else "#ccc"
        return (f'<div style="border-left:4px solid {border};padding:.3em .6em;margin:.4em 0;text-align:left">'
                + "".join(f"<div>{line}</div>" for line in lines) + "</div>")   # no blank line after a block

    # -- threshold and costs (classifiers)
    def _threshold_panel(self, w):
        labels = self.report.labels
        self.positive = w.Dropdown(options=labels, value=labels[1] if len(labels) == 2 else labels[0],
                                   description="class")
        self.threshold = w.FloatSlider(value=0.5, min=0.01, max=0.99, step=0.01, description="threshold",
                                       continuous_update=True, readout_format=".2f")
        self.cost_fp = w.FloatText(value=1.0, description="cost of FP", layout=w.Layout(width="12em"))
        self.cost_fn = w.FloatText(value=1.0, description="cost of FN", layout=w.Layout(width="12em"))
        self.stats = w.HTML()
        for c in (self.positive, self.threshold, self.cost_fp, self.cost_fn):
            c.observe(self._update_stats, names="value")
        self._update_stats()
        intro = w.HTML("<b>Decide with a threshold</b>: call an item the chosen class when its score reaches the "
                       "threshold; set what a false positive (FP) and a false negative (FN) cost you.")
        return w.VBox([intro, w.HBox([self.positive, self.threshold]), w.HBox([self.cost_fp, self.cost_fn]), self.stats])

    def current_stats(self) -> dict:
        t, pos = self.report.table, self.positive.value
        y = (t.reference == pos).to_numpy()
        p = np.array([s.get(pos, 0.0) for s in t["scores"]])
        out = threshold_stats(y, p, self.threshold.value, cost_fp=self.cost_fp.value, cost_fn=self.cost_fn.value)
        out["cheapest_threshold"] = cheapest_threshold(y, p, cost_fp=self.cost_fp.value, cost_fn=self.cost_fn.value)
        return out

    def _update_stats(self, _change=None) -> None:
        s = self.current_stats()
        f = lambda v: "n/a" if v != v else f"{v:.1%}"  # noqa: E731
        self.stats.value = (f"precision <b>{f(s['precision'])}</b> · recall <b>{f(s['recall'])}</b> · "
                            f"{s['false_positives']} false positives · {s['false_negatives']} false negatives · "
                            f"cost <b>{s['cost']:g}</b> (cheapest threshold for these costs: {s['cheapest_threshold']:.2f})")
        self._refresh_copy()


def explore(report, *, page_size: int = 5) -> Explorer:
    """An error browser over an EvalReport: filter, sort by confidence, page through the examples."""
    return Explorer(report, page_size=page_size)
