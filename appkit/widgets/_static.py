"""A static copy beside each interactive widget, for a notebook reopened without its kernel.

JupyterLab does not save a widget's state in the notebook (unless "Save Widget State Automatically" is on), so
a reopened notebook shows "Error displaying widget: model not found" where a widget was, and it keeps choosing
the widget view over any other representation of the same output. appkit therefore displays two outputs: a
static HTML copy of what the widget shows (kept up to date while it is used), then the widget. A style rule
shows the copy only while the widget's output is in JupyterLab's error state (its renderer carries the
``jupyter-widgets`` class only then), and hides that error; while the widget lives the copy stays hidden.
"""
from __future__ import annotations

import html

_STYLE = ("<style>.appkit-static{display:none}"
          ".jp-OutputArea:has(> .jp-OutputArea-child > .jp-OutputArea-output.jupyter-widgets) .appkit-static"
          "{display:block}"
          ".jp-OutputArea:has(.appkit-static) > .jp-OutputArea-child:has(> .jp-OutputArea-output.jupyter-widgets)"
          "{display:none}</style>")


def fallback_html(title: str, body: str) -> str:
    """The static copy: what the widget showed last, and how to get the live widget back."""
    from ..report import notebook_safe

    return _STYLE + notebook_safe(
        f'<div class="appkit-static tex2jax_ignore mathjax_ignore" style="border-left:4px solid #ccc;padding:.3em .7em">'
        f"<b>{html.escape(title)}</b> <i>(a saved copy; run this cell again to use it)</i>{body}</div>")


class WithStaticCopy:
    """Mixin for appkit's widgets: ``widget`` is the ipywidget, ``static_body()`` what it shows, as HTML."""

    title = "appkit widget"
    _copy = None

    def static_body(self) -> str:
        raise NotImplementedError

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        self._copy = display(HTML(fallback_html(self.title, self.static_body())), display_id=True)
        bundle = self.widget._repr_mimebundle_()
        # what a front end without widgets (or an untrusted notebook) shows instead of "VBox(children=...)"
        bundle["text/plain"] = f"{self.title} (interactive: run this cell in Jupyter to use it)"
        display(bundle, raw=True)

    def _refresh_copy(self) -> None:
        """Called after each change the user makes, so the saved copy shows the last state."""
        if self._copy is not None:
            from IPython.display import HTML

            self._copy.update(HTML(fallback_html(self.title, self.static_body())))
