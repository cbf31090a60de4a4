"""HTML for EvalReport (in the notebook and as a self-contained file), its plots, and the model card.

Every HTML appkit shows in a notebook passes through ``notebook_safe``: JupyterLab typesets
``$...$`` and ``\\(...\\)`` in outputs as LaTeX, and user texts (prices, paths) are full of them.
"""
from __future__ import annotations

import base64
import difflib
import html
import io
import re
from contextlib import contextmanager
from datetime import datetime, timezone

import numpy as np

# Okabe-Ito: told apart by people with any common colour-vision deficiency, and in greyscale print
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
_STYLE = {
    "figure.dpi": 100, "savefig.dpi": 100, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "axes.axisbelow": True, "legend.frameon": False,
}

_CSS = """
.appkit-report{font-family:system-ui,-apple-system,Segoe UI,sans-serif;color:#222;line-height:1.45;max-width:60em}
.appkit-report .summary{font-size:1.15em;background:#eef5fb;border-left:4px solid #0072B2;padding:.6em .9em}
.appkit-report .scroll{overflow-x:auto;max-width:100%}
.appkit-report table{border-collapse:collapse;margin:.5em 0 1em}
.appkit-report td,.appkit-report th{border:1px solid #ddd;padding:4px 8px;text-align:left!important;vertical-align:top}
.appkit-report td.num,.appkit-report th.num{text-align:right!important;font-variant-numeric:tabular-nums}
.appkit-report th{background:#f4f4f4}
.appkit-report .kpi{display:inline-block;margin:0 1.5em .7em 0;vertical-align:top}
.appkit-report .kpi b{font-size:1.6em;display:block}
.appkit-report .kpi small{display:block;color:#555}
.appkit-report .plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.appkit-report img{max-width:100%;height:auto}
.appkit-report del{background:#fdd;text-decoration:line-through}
.appkit-report ins{background:#dfd;text-decoration:none}
.appkit-report img.thumb{max-width:96px;max-height:96px}
"""
_PAGE_CSS = "body{margin:1em auto;padding:0 1em;max-width:60em}"

# ---------------------------------------------------------------------- escaping
_TAG = re.compile(r"(<[^>]*>)")


def notebook_safe(fragment: str) -> str:
    """HTML whose text MathJax cannot read as math: each ``$`` and backslash in text (not in tags or
    attributes) gets its own <span>, and MathJax never joins text across elements into one formula."""
    parts = _TAG.split(fragment)
    for i in range(0, len(parts), 2):   # even positions are text between tags
        parts[i] = parts[i].replace("$", "<span>$</span>").replace("\\", "<span>\\</span>")
    return "".join(parts)


def esc(x) -> str:
    return html.escape(str(x))


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "" if v != v else f"{float(v):.3f}"
    return esc(v)


def frame_html(df, *, raw_cols: tuple = ()) -> str:
    """A DataFrame as an HTML table: text left-aligned, numbers right-aligned and rounded (the data stays exact);
    ``raw_cols`` already hold HTML (thumbnails, diffs), the rest is escaped."""
    def cls(v):
        return ' class="num"' if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else ""

    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = []
    for r in df.itertuples(index=False):
        cells = [f"<td>{v}</td>" if c in raw_cols else f"<td{cls(v)}>{_fmt(v)}</td>" for c, v in zip(df.columns, r)]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'


table_html = frame_html   # the tasks' worst-error tables use the same renderer


# ---------------------------------------------------------------------- plain language
def _pct(v: float) -> str:
    return f"{v:.1%}" if v < 0.1 else f"{v:.0%}"


def _interval(report, key: str) -> tuple | None:
    return report.intervals.get(key)


def _ci_text(lo: float, hi: float, percent: bool) -> str:
    if percent:
        digits = 1 if hi < 0.1 else 0
        return f"95% CI {lo * 100:.{digits}f}-{hi * 100:.{digits}f}%"
    return f"95% CI {lo:.3f}-{hi:.3f}" if hi <= 1 else f"95% CI {lo:.1f}-{hi:.1f}"


def plain_summary(report) -> str:
    """One sentence a stakeholder can repeat: the headline number, its interval, the typical mistake."""
    n, m, noun = len(report.table), report.metrics, report.noun
    if "accuracy" in m:
        ci = _interval(report, "accuracy")
        s = f"Right {_pct(m['accuracy'])} of the time" + (f" ({_ci_text(*ci, True)})" if ci else "") + f" on {n} test {noun}"
        pair = _top_confusion(report)
        if pair:
            s += f"; most often mistakes {pair[0]} for {pair[1]} ({pair[2]} times)"
        for k, v in report.baseline.items():
            if k.startswith("accuracy of always answering"):
                s += f". Always answering {k.removeprefix('accuracy of always answering ')} would be right {_pct(v)}"
        return s + "."
    if "wer" in m:
        ci = _interval(report, "wer")
        s = (f"Gets {_pct(m['wer'])} of words wrong" + (f" ({_ci_text(*ci, True)})" if ci else "")
             + f" on {n} {noun}")
        if "sentence_error_rate" in m:
            s += f"; {_pct(1 - m['sentence_error_rate'])} of {noun} are transcribed without a single mistake"
        return s + "."
    if "chrf" in m:
        ci = _interval(report, "chrf")
        s = f"Scores chrF {m['chrf']:.1f} of 100" + (f" ({_ci_text(*ci, False)})" if ci else "") + f" on {n} {noun}"
        for k, v in report.baseline.items():
            if k.startswith("chrF of copying"):
                s += f"; copying the source unchanged would score {v:.1f}"
        return s + "."
    first = next(((k, v) for k, v in m.items() if isinstance(v, float)), None)
    return f"{first[0]} {first[1]:.3f} on {n} {noun}." if first else f"{n} {noun} evaluated."


def _top_confusion(report):
    cm = report.confusion
    if cm is None or len(cm) < 2:
        return None
    m = cm.values.copy()
    np.fill_diagonal(m, 0)
    if m.max() == 0:
        return None
    i, j = np.unravel_index(m.argmax(), m.shape)
    return cm.index[i], cm.columns[j], int(m[i, j])


# ---------------------------------------------------------------------- plots
@contextmanager
def plot_style():
    """The one look of appkit's plots: colour-blind-safe palette, light grid, no box."""
    import matplotlib.pyplot as plt
    from cycler import cycler

    with plt.rc_context({**_STYLE, "axes.prop_cycle": cycler(color=PALETTE)}):
        yield


def fig_to_img(fig, *, width: int | None = None, alt: str = "") -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    w = f' width="{width}"' if width else ""
    return (f'<img{w} alt="{html.escape(alt, quote=True)}" '
            f'src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>')


def plot_confusion(report, ax=None, normalize: bool = True):
    import matplotlib.pyplot as plt

    cm = report.confusion
    if cm is None:
        raise ValueError("this report has no confusion matrix (not a classification task)")
    counts = cm.values.astype(float)
    m = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    n = len(cm)
    with plot_style():
        if ax is None:
            _, ax = plt.subplots(figsize=(1.6 + 0.75 * n, 1.2 + 0.65 * n))
        ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
        ax.grid(False)
        ax.set_xticks(range(n), cm.columns, rotation=45, ha="right")
        ax.set_yticks(range(n), cm.index)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(n):
            for j in range(n):
                txt = f"{m[i, j]:.0%}\n({int(counts[i, j])})" if normalize else f"{int(counts[i, j])}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                        color="white" if (m[i, j] / (m.max() or 1)) > 0.55 else "black")
        ax.set_title("Confusion (rows: true class)")
    return ax


def _per_class_figure(report):
    import matplotlib.pyplot as plt

    pc = report.per_class
    x = np.arange(len(pc))
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(pc) + 1.5), 3))
    for k, col in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (k - 1) * 0.27, pc[col], width=0.27, label=col, color=PALETTE[k])
    ax.set_xticks(x, [f"{lab}\n(n={s})" for lab, s in zip(pc["label"], pc["support"])])
    ax.set_ylim(0, 1)
    ax.set_title("Per class")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
    return fig


def _reliability_figure(report, bins: int = 10):
    import matplotlib.pyplot as plt

    conf, correct = report.table["score"].to_numpy(float), report.table["correct"].to_numpy(float)
    edges = np.linspace(0, 1, bins + 1)
    b = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    fig, ax = plt.subplots(figsize=(4, 3.4))
    ax.plot([0, 1], [0, 1], "--", color="#777", label="perfectly honest")
    mids, accs, ns = [], [], []
    for k in range(bins):
        sel = b == k
        if sel.any():
            mids.append(conf[sel].mean())
            accs.append(correct[sel].mean())
            ns.append(int(sel.sum()))
    ax.plot(mids, accs, "o-", color=PALETTE[0], label="this model")
    for x, y, n in zip(mids, accs, ns):
        ax.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("confidence")
    ax.set_ylabel("share right")
    ax.set_title("Calibration (numbers: examples per bin)")
    ax.legend(loc="upper left")
    return fig


def _confidence_figure(report):
    import matplotlib.pyplot as plt

    t = report.table
    fig, ax = plt.subplots(figsize=(4, 3))
    bins = np.linspace(0, 1, 21)
    ax.hist([t.loc[t.correct, "score"], t.loc[~t.correct, "score"]], bins=bins, stacked=True,
            color=[PALETTE[2], PALETTE[3]], label=["right", "wrong"])
    ax.set_xlabel("confidence")
    ax.set_ylabel("examples")
    ax.set_title("How sure it is, right vs wrong")
    ax.legend()
    return fig


def _item_metric_figure(report, col: str, label: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.hist(report.table[col].astype(float), bins=20, color=PALETTE[0])
    ax.set_xlabel(label)
    ax.set_ylabel(report.noun)
    ax.set_title(f"{label}, one value per item")
    return fig


def _slices_figure(report):
    import matplotlib.pyplot as plt

    s = report.slices
    metric = next(k for k in ("accuracy", "macro_f1", "wer", "chrf", "bleu") if k in s)
    names = [f"{a}={b} (n={n})" for a, b, n in zip(s["slice"], s["value"], s["n"])]
    fig, ax = plt.subplots(figsize=(5, 0.45 * len(s) + 1.2))
    ax.barh(range(len(s)), s[metric], color=PALETTE[0])
    ax.set_yticks(range(len(s)), names)
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    for i, v in enumerate(s[metric]):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    ax.set_title(f"{metric} per slice (small n: read with care)")
    return fig


def report_figures(report) -> dict:
    """name -> (Figure, alt text), in the order the report shows them."""
    figs = {}
    with plot_style():
        if report.confusion is not None:
            figs["confusion"] = (plot_confusion(report).figure,
                                 "Confusion matrix: share of each true class given each predicted label")
        if report.per_class is not None:
            figs["per_class"] = (_per_class_figure(report), "Bar chart of precision, recall and F1 per class")
        if "score" in report.table and "correct" in report.table and len(report.table):
            figs["reliability"] = (_reliability_figure(report),
                                   "Reliability diagram: confidence against share of correct answers")
            figs["confidence"] = (_confidence_figure(report), "Histogram of confidence, right and wrong answers")
        for col, label in (("wer", "word error rate"), ("chrf", "chrF")):
            if col in report.table and len(report.table):
                figs[col] = (_item_metric_figure(report, col, label), f"Histogram of {label} per item")
        if report.slices is not None and len(report.slices):
            figs["slices"] = (_slices_figure(report), "Bar chart of the main metric per slice, with counts")
    return figs


# ---------------------------------------------------------------------- the report
def _kpis(report) -> str:
    out = []
    for k, v in report.metrics.items():
        if not isinstance(v, float):
            continue
        ci = report.intervals.get(k)
        info = report.metric_info.get(k)
        pct = bool(info and info.percent)
        shown = f"{v:.1%}" if pct else f"{v:.3f}" if abs(v) <= 1 else f"{v:.1f}"
        ci_txt = f"<small>{_ci_text(*ci, pct)}</small>" if ci else "<small>&nbsp;</small>"
        out.append(f'<span class="kpi" title="{html.escape(info.text if info else k, quote=True)}"><b>{shown}</b>'
                   f"{ci_txt}{esc(k)}</span>")
    return f"<div>{''.join(out)}</div>"


def render_report(report, *, standalone: bool, examples: bool = True, title: str | None = None) -> str:
    title = title or f"{report.task} evaluation"
    parts = [f"<h2>{esc(title)}</h2>", f'<p class="summary">{esc(plain_summary(report))}</p>',
             f"<p>Model <code>{esc(report.model)}</code> (computed in {esc(report.runs_in or 'float32')}), "
             f"{len(report.table)} examples"
             + (f", {len(report.skipped)} skipped (unreadable)" if report.skipped else "")
             + ". Intervals: 95% bootstrap over the examples; a narrow one means the number would hold on "
               "similar data.</p>",
             _kpis(report)]
    parts.append("<ul>" + "".join(f"<li><b>{k}</b>: {esc(report.metric_info[k].text)}</li>" for k in report.metrics
                                  if k in report.metric_info) + "</ul>")
    if report.baseline:
        parts.append("<p>Baseline for comparison: " + ", ".join(f"{esc(k)} {v:.3f}" for k, v in report.baseline.items()) + "</p>")
    figs = report_figures(report)
    if figs:
        parts.append("<h3>Where it goes wrong</h3><div class=\"plots\">"
                     + "".join(fig_to_img(f, alt=alt) for f, alt in figs.values()) + "</div>")
    if report.per_class is not None:
        parts.append("<h3>Per class</h3>" + frame_html(report.per_class))
    if report.slices is not None:
        parts.append("<h3>Per slice</h3>" + frame_html(report.slices))
    if examples:
        if report.worst_html:
            parts.append(f'<h3>Worst errors</h3><div class="scroll">{report.worst_html}</div>')
    else:
        parts.append("<p><i>Examples left out of this report (examples=False).</i></p>")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<p style='color:#666'>Made with appkit on {stamp}.</p>")
    body = notebook_safe(f'<div class="appkit-report tex2jax_ignore mathjax_ignore">{"".join(parts)}</div>')
    if not standalone:
        return f"<style>{_CSS}</style>{body}"
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{_PAGE_CSS}{_CSS}</style></head><body>{body}</body></html>")


def word_diff_html(reference: str, hypothesis: str, *, normalise: bool = True) -> str:
    """Reference vs hypothesis word by word: <del> for missed/wrong words, <ins> for what came instead.

    normalise=True compares words as WER does (lower case, no punctuation, numbers as English words);
    False compares them as written (translation: case and punctuation are part of the result)."""
    from .metrics import normalise_text

    if normalise:
        reference, hypothesis = normalise_text(reference), normalise_text(hypothesis)
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


# ---------------------------------------------------------------------- model and data cards
_INTENDED = {
    "text-classification": "Sorts short texts into the classes {labels}.",
    "image-classification": "Sorts photos into the classes {labels}.",
    "speech-recognition": "Writes down what is said in recordings (language: {language}).",
    "translation": "Translates sentences from one language into another, as the base model does.",
}
_LIMITS = {
    "text-classification": "Reads only the first {max_length} tokens of a text; sarcasm, negation and topics "
                           "absent from the training data are common failure cases.",
    "image-classification": "Sees a centre crop at low resolution; objects at the edges, unusual angles and "
                            "lighting not in the training data are common failure cases.",
    "speech-recognition": "Accents, noise, overlapping speakers and domain words absent from the training "
                          "data raise the error rate; numbers may be written as digits or words.",
    "translation": "Names, numbers and domain terms can be mistranslated; a fluent output can still be wrong.",
}


def _summary_stats(values) -> dict:
    v = np.asarray([x for x in values if x is not None and x == x], dtype=float)
    if not len(v):
        return {}
    return {"min": round(float(v.min()), 2), "median": round(float(np.median(v)), 2),
            "mean": round(float(v.mean()), 2), "max": round(float(v.max()), 2), "n": int(len(v))}


def _image_size(x):
    from PIL import Image

    if hasattr(x, "size") and hasattr(x, "mode"):
        return x.size
    src = io.BytesIO(x) if isinstance(x, (bytes, bytearray)) else x
    with Image.open(src) as im:      # reads the header only
        return im.size


def _audio_seconds(x):
    import soundfile as sf

    if isinstance(x, dict) and "array" in x:
        return len(x["array"]) / x["sampling_rate"]
    if isinstance(x, tuple) and len(x) == 2:
        return len(x[0]) / x[1]
    if isinstance(x, dict) and x.get("path"):
        x = x["path"]
    return sf.info(str(x)).duration


def _measure(items, fn, limit: int = 5000) -> tuple[list, int]:
    """fn over at most ``limit`` items (a card is a summary, not a scan of a million files); unreadable ones counted."""
    out, bad = [], 0
    for x in list(items)[:limit]:
        try:
            out.append(fn(x))
        except Exception:
            bad += 1
    return out, bad


def describe_inputs(kind: str, items) -> dict:
    """Length / size / duration summaries of one column of inputs, for the data card."""
    if kind in ("text", "source", "target"):
        texts = [str(x) for x in items]
        return {"characters": _summary_stats([len(t) for t in texts]),
                "words": _summary_stats([len(t.split()) for t in texts])}
    if kind == "image":
        sizes, bad = _measure(items, _image_size)
        return {"width_px": _summary_stats([w for w, _ in sizes]), "height_px": _summary_stats([h for _, h in sizes]),
                "unreadable": bad}
    if kind == "audio":
        secs, bad = _measure(items, _audio_seconds)
        return {"duration_s": _summary_stats(secs), "total_minutes": round(sum(secs) / 60, 1), "unreadable": bad}
    return {}


def data_card(task, train_df, eval_df=None) -> dict:
    """What the model was trained on, described without a single example: a fingerprint, counts, summaries."""
    from .data import data_fingerprint

    card = {"fingerprint": data_fingerprint(task, train_df), "rows": {"train": len(train_df)}}
    if eval_df is not None:
        card["rows"]["evaluation"] = len(eval_df)
        card["evaluation_fingerprint"] = data_fingerprint(task, eval_df)
    if getattr(task, "is_classifier", False):
        card["labels"] = {"train": {str(k): int(v) for k, v in train_df[task.target_column].astype(str).value_counts().items()}}
        if eval_df is not None:
            card["labels"]["evaluation"] = {str(k): int(v) for k, v in
                                            eval_df[task.target_column].astype(str).value_counts().items()}
    card["inputs"] = describe_inputs(task.input_column, train_df[task.input_column])
    if not getattr(task, "is_classifier", False):
        card["targets"] = describe_inputs("target", train_df[task.target_column])
    return card


def _examples(task, train_df, per_label: int = 3) -> list[dict]:
    cols = [task.input_column, task.target_column]
    if getattr(task, "is_classifier", False):
        rows = train_df.groupby(task.target_column, sort=True).head(per_label)
    else:
        rows = train_df.head(5)
    return [{c: (str(r[c]) if isinstance(r[c], str) or r[c] is None else repr(r[c])[:200]) for c in cols}
            for _, r in rows.iterrows()]


def model_card(task, *, include_examples: bool = False) -> dict:
    """The model card saved in appkit.json and written out as README.md.

    Training examples appear only with include_examples=True: the card is meant to travel."""
    from .registry import find_model

    meta = task.meta
    old = meta.get("model_card") or {}
    base = meta.get("catalogue") or meta.get("base_model") or old.get("base_model") or meta.get("source") or "unknown"
    entry = find_model(str(base)) if base != "unknown" else None
    trained = getattr(task, "_card_data", None)
    card = {
        "intended_use": _INTENDED.get(task.task, "").format(labels=task.labels, language=getattr(task, "language", None)),
        "base_model": str(base),
        "licence": entry.licence if entry else old.get("licence", "not recorded: check the base model's own page"),
        "training": {k: v for k, v in (meta.get("training") or {}).items() if k != "eval_metrics"} or None,
        "validation_metrics": (meta.get("training") or {}).get("eval_metrics") or None,
        "evaluation": meta.get("last_evaluation"),
        "data": data_card(task, *trained) if trained else old.get("data"),
        "limitations": _limitations(task, trained),
    }
    if include_examples and trained:
        card["examples"] = _examples(task, trained[0])
    return card


def _limitations(task, trained) -> list[str]:
    out = [_LIMITS.get(task.task, "").format(max_length=getattr(task, "max_length", "?")),
           "Measured on the evaluation data above: other data (other sources, periods, wording) can score lower. "
           "Check on a sample of your own before relying on it.",
           "Not meant as the only basis of decisions about people (health, credit, hiring, discipline)."]
    ev = task.meta.get("last_evaluation") or {}
    if ev.get("rows") and ev["rows"] < 200:
        out.append(f"Evaluated on only {ev['rows']} examples: the intervals are wide.")
    ce = (ev.get("metrics") or {}).get("calibration_error")
    if ce is not None and ce > 0.1:
        out.append(f"Its confidence is not a reliable probability (calibration error {ce:.2f}).")
    if trained and getattr(task, "is_classifier", False):
        counts = trained[0][task.target_column].astype(str).value_counts()
        small = [k for k, v in counts.items() if v < 30]
        if small:
            out.append(f"Few training examples (under 30) for {small}: expect more mistakes there.")
    return out


def card_markdown(task, card: dict) -> str:
    """README.md for the saved folder: what a colleague needs before using the model."""
    def table(d: dict) -> str:
        return "\n".join(f"| {k} | {_md_value(v)} |" for k, v in d.items())

    lines = [f"# {task.task} model (appkit)", "", "## Intended use", card["intended_use"], "",
             "## Base model", f"- Model: `{card['base_model']}`", f"- Licence: {card['licence']}", ""]
    if card.get("training"):
        lines += ["## Training settings", "| setting | value |", "|---|---|", table(card["training"]), ""]
    ev = card.get("evaluation")
    if ev:
        lines += ["## Metrics", f"On {ev['rows']} evaluation examples; 95% bootstrap intervals.", "",
                  "| metric | value | 95% interval |", "|---|---|---|"]
        for k, v in ev["metrics"].items():
            iv = (ev.get("intervals") or {}).get(k)
            lines.append(f"| {k} | {_md_value(v)} | {f'{iv[0]:.4g} - {iv[1]:.4g}' if iv else 'n/a'} |")
        lines.append("")
    if card.get("validation_metrics"):
        lines += ["Validation metrics at the end of training:", "", "| metric | value |", "|---|---|",
                  table(card["validation_metrics"]), ""]
    data = card.get("data")
    if data:
        lines += ["## Data card", f"- Fingerprint (content hash of the training data): `{data['fingerprint']}`",
                  f"- Rows: {data['rows']}"]
        for split, counts in (data.get("labels") or {}).items():
            lines.append(f"- Rows per label ({split}): {counts}")
        for key in ("inputs", "targets"):
            for what, stats in (data.get(key) or {}).items():
                lines.append(f"- {key} {what}: {stats}")
        lines += ["", "No training example is stored in this folder."
                  if not card.get("examples") else "Examples were included on request (include_examples=True).", ""]
    if card.get("examples"):
        lines += ["## Examples", *[f"- {e}" for e in card["examples"]], ""]
    lines += ["## Limitations", *[f"- {x}" for x in card["limitations"] if x], ""]
    return "\n".join(lines)


def _md_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")
