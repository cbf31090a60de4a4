"""HTML for EvalReport (in the notebook and as a self-contained file) and the model card."""
from __future__ import annotations

import base64
import difflib
import html
import io
from datetime import datetime, timezone

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1000px;margin:2em auto;color:#222}
.appkit-report table{border-collapse:collapse;margin:.5em 0 1em}
.appkit-report td,.appkit-report th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
.appkit-report th{background:#f4f4f4}
.appkit-report .kpi{display:inline-block;margin:0 1.5em .5em 0}
.appkit-report .kpi b{font-size:1.6em;display:block}
.appkit-report del{background:#fdd;text-decoration:line-through}
.appkit-report ins{background:#dfd;text-decoration:none}
.appkit-report img.thumb{max-width:96px;max-height:96px}
"""

_PLAIN = {
    "accuracy": "share of examples labelled correctly",
    "macro_f1": "balance of precision and recall, averaged over classes so small classes count as much as big ones",
    "weighted_f1": "F1 averaged over classes, weighted by their size",
    "roc_auc": "how well the scores rank the right class first (0.5 = chance, 1 = perfect)",
    "calibration_error": "gap between the model's confidence and how often it is right (0 = honest)",
    "wer": "word error rate: share of words wrong, missing or extra (lower is better)",
    "cer": "character error rate: like WER on letters, so a near miss ('color' for 'colour') costs little (lower is better)",
    "sentence_error_rate": "share of recordings with at least one word wrong (lower is better)",
    "bleu": "how many of the reference translation's word sequences the model wrote (0-100; above ~30 is usually understandable)",
    "chrf": "the same on characters, fairer to word endings and compound words (0-100)",
}


def fig_to_img(fig, *, width: int | None = None) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    w = f' width="{width}"' if width else ""
    return f'<img{w} src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def plot_confusion(report, ax=None, normalize: bool = True):
    import matplotlib.pyplot as plt
    import numpy as np

    cm = report.confusion
    if cm is None:
        raise ValueError("this report has no confusion matrix (not a classification task)")
    m = cm.values.astype(float)
    if normalize:
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(cm)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.6 * n, 1 + 0.55 * n))
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(n), cm.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), cm.index)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            txt = f"{m[i, j]:.0%}" if normalize else f"{int(m[i, j])}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8, color="white" if m[i, j] > 0.5 else "black")
    ax.set_title("Confusion (rows: true class)")
    return ax


def render_report(report, *, standalone: bool, examples: bool = True, title: str | None = None) -> str:
    task = report._task
    title = title or f"{report.task} evaluation"
    parts = [f"<h2>{html.escape(title)}</h2>",
             f"<p>Model <code>{html.escape(report.model)}</code>, {len(report.table)} examples"
             + (f", {len(report.skipped)} skipped (unreadable)" if report.skipped else "") + ".</p>"]
    kpis = "".join(f'<span class="kpi" title="{html.escape(_PLAIN.get(k, k))}"><b>{v:.3f}</b>{html.escape(k)}</span>'
                   for k, v in report.metrics.items() if isinstance(v, float))
    parts.append(f"<div>{kpis}</div>")
    parts.append("<ul>" + "".join(f"<li><b>{k}</b>: {html.escape(_PLAIN[k])}</li>" for k in report.metrics if k in _PLAIN) + "</ul>")
    if report.baseline:
        parts.append("<p>Baseline for comparison: " + ", ".join(f"{html.escape(k)} {v:.3f}" for k, v in report.baseline.items()) + "</p>")
    if report.confusion is not None:
        parts.append("<h3>Where it goes wrong</h3>" + fig_to_img(plot_confusion(report).figure))
    if report.per_class is not None:
        parts.append("<h3>Per class</h3>" + report.per_class.to_html(index=False, float_format="%.3f"))
    if report.slices is not None:
        parts.append("<h3>Per slice</h3>" + report.slices.to_html(index=False, float_format="%.3f"))
    if examples:
        worst = report.worst(10)
        if len(worst):
            parts.append("<h3>Worst errors</h3>" + task._worst_html(worst))
    else:
        parts.append("<p><i>Examples left out of this report (examples=False).</i></p>")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<p style='color:#888'>Made with appkit on {stamp}.</p>")
    body = f'<div class="appkit-report">{"".join(parts)}</div>'
    if not standalone:
        return f"<style>{_CSS}</style>{body}"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def table_html(df, *, escape_cols: tuple = (), raw_cols: tuple = ()) -> str:
    """A DataFrame as HTML where raw_cols already hold HTML (thumbnails, diffs) and the rest is escaped."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            if c in raw_cols:
                cells.append(f"<td>{v}</td>")
            elif isinstance(v, float):
                cells.append(f"<td>{v:.3f}</td>")
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def word_diff_html(reference: str, hypothesis: str, *, normalise: bool = True) -> str:
    """Reference vs hypothesis word by word: <del> for missed/wrong words, <ins> for what came instead.

    normalise=True compares words as WER does (lower case, no punctuation, numbers as English words);
    False compares them as written (translation: case and punctuation are part of the result)."""
    from .metrics import _normalise_text

    if normalise:
        reference, hypothesis = _normalise_text(reference), _normalise_text(hypothesis)
    ref, hyp = reference.split(), hypothesis.split()
    out = []
    for op, a, b, c, d in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(ref[a:b])))
            continue
        if b > a:
            out.append(f"<del>{html.escape(' '.join(ref[a:b]))}</del>")
        if d > c:
            out.append(f"<ins>{html.escape(' '.join(hyp[c:d]))}</ins>")
    return " ".join(out)
