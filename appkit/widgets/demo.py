"""``appkit.widgets.demo(task)``: type a text, upload an image or a recording, see what the model says."""
from __future__ import annotations

import html

from ..errors import AppkitError
from ._static import WithStaticCopy

_ERROR_STYLE = "background:#fdecea;border-left:4px solid #D55E00;padding:.4em .7em;white-space:pre-wrap"


def score_bars_html(scores: dict, top: int = 5) -> str:
    """The top scores as horizontal bars, each with its label and percentage written out (no colour needed to read it)."""
    rows = sorted(scores.items(), key=lambda kv: -kv[1])[:top]
    out = []
    for label, p in rows:
        out.append(f'<div style="display:flex;align-items:center;gap:6px;margin:2px 0">'
                   f'<span style="width:9em;overflow:hidden;text-overflow:ellipsis">{html.escape(str(label))}</span>'
                   f'<span style="display:inline-block;height:12px;width:{max(p, 0.005) * 200:.0f}px;background:#0072B2"></span>'
                   f"<span>{p:.1%}</span></div>")
    return "".join(out)


def result_html(task, result: dict) -> str:
    from ..report import notebook_safe

    if "label" in result:
        body = (f"<div style='font-size:1.3em'>→ <b>{html.escape(str(result['label']))}</b> "
                f"({result['score']:.1%} sure)</div>" + score_bars_html(result.get("scores", {})))
    elif "translation" in result:
        body = f"<div style='font-size:1.1em'>{html.escape(result['translation'])}</div>"
    else:
        body = f"<div style='font-size:1.1em'>“{html.escape(result.get('text', ''))}”</div>"
    return notebook_safe(f'<div class="tex2jax_ignore mathjax_ignore">{body}</div>')


def error_html(exc: Exception) -> str:
    from ..report import notebook_safe

    return notebook_safe(f'<div class="tex2jax_ignore mathjax_ignore" style="{_ERROR_STYLE}">'
                         f"<b>{html.escape(type(exc).__name__)}</b>: {html.escape(str(exc))}</div>")


class Demo(WithStaticCopy):
    """The widget (``.widget``) and its parts, so tests and users can drive it from code."""

    def __init__(self, task):
        import ipywidgets as w

        self.task = task
        self.title = f"Try it: {task.task} · {task.meta.get('catalogue') or task.meta.get('source') or ''}".rstrip(" ·")
        self.last_input = ""
        self.kind = task.input_column
        self.result = w.HTML("")
        self.preview = w.Output()
        self.text = self.upload = None
        self.button = w.Button(description="Translate" if self.kind == "source" else "Predict", button_style="primary")
        self.button.on_click(lambda _b: self.run())
        if self.kind in ("text", "source"):
            placeholder = "Type a sentence to translate" if self.kind == "source" else "Type or paste a text"
            self.text = w.Textarea(placeholder=placeholder, layout=w.Layout(width="100%", height="6em"))
            controls = [self.text, self.button]
        else:
            accept = "image/*" if self.kind == "image" else "audio/*,.wav,.flac,.ogg,.mp3"
            self.upload = w.FileUpload(accept=accept, multiple=False, description="Upload")
            self.upload.observe(lambda _c: self.run(), names="value")
            self.media = w.Image(layout=w.Layout(max_width="320px")) if self.kind == "image" else w.Audio(autoplay=False, controls=True)
            self.media.layout.display = "none"
            controls = [self.upload, self.media]
        self.widget = w.VBox([w.HTML(f"<b>{html.escape(self.title)}</b>"), *controls, self.result])

    def _input(self):
        if self.text is not None:
            return self.text.value
        if not self.upload.value:
            return None
        item = self.upload.value[0]
        data = bytes(item["content"])
        self.media.value = data
        if self.kind == "image":
            self.media.format = (item.get("type") or "image/png").split("/")[-1]
        else:
            self.media.format = (item.get("name") or "x.wav").rsplit(".", 1)[-1].lower()
        self.media.layout.display = None
        return data

    def run(self) -> None:
        x = self._input()
        if x is None:
            return
        self.result.value = "<i>working…</i>"
        try:
            self.result.value = result_html(self.task, self.task.predict(x))
        except AppkitError as exc:      # the user's mistake: say what and how to fix, no traceback
            self.result.value = error_html(exc)
        self.last_input = (html.escape(x) if isinstance(x, str) else
                           html.escape(self.upload.value[0].get("name") or "an uploaded file"))
        self._refresh_copy()

    def static_body(self) -> str:
        if not self.last_input:
            return "<p>Nothing tried yet.</p>"
        return f"<p>Last tried: “{self.last_input}”</p>{self.result.value}"


def demo(task) -> Demo:
    """A try-it widget for any appkit task: a text box, an image or audio upload, or a sentence to translate."""
    return Demo(task)
