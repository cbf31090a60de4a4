"""Training progress, handed to the engine as a transformers TrainerCallback.

In a Jupyter kernel: one widget updated in place (loss / metric chart per epoch, epoch and step
counters, elapsed and ETA, a Stop button), replaced by a static HTML summary when training ends so
a saved notebook shows the summary, not "Error displaying widget". In a terminal: one tqdm bar and
one line per epoch. ipywidgets is imported only inside a kernel.
"""
from __future__ import annotations

import base64
import html
import io
import time

from transformers import TrainerCallback


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, nbclient), False in a terminal or plain IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def progress_callback(*, metric: str):
    return LiveTraining(metric=metric) if in_notebook() else TerminalProgress(metric=metric)


def bar(iterable, *, desc: str, unit: str = "it", disable: bool = False):
    """Progress over appkit's own loops (feature extraction, prediction batches). In a terminal a tqdm bar that
    disappears when done; in a notebook a plain HTML bar updated in place and emptied when done. Not tqdm's widget
    bar: a notebook saved with one reads "Error displaying widget" where it was, once reopened."""
    if disable:
        return iterable
    if not in_notebook():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, unit=unit, leave=False)
    return _html_bar(iterable, desc=desc, unit=unit)


def _html_bar(iterable, *, desc: str, unit: str, every_s: float = 0.5):
    from IPython.display import HTML, display

    total = len(iterable) if hasattr(iterable, "__len__") else None
    started = last = time.perf_counter()

    def render(done: int) -> HTML:
        elapsed = time.perf_counter() - started
        left = f", about {_clock(elapsed / done * (total - done))} left" if total and done else ""
        meter = f'<progress value="{done}" max="{total}" style="width:16em"></progress> ' if total else ""
        return HTML(f"<div>{meter}{html.escape(desc)}: {done}{'/' + str(total) if total else ''} {html.escape(unit)} "
                    f"({_clock(elapsed)}{left})</div>")

    handle = display(render(0), display_id=True)
    done = 0
    try:
        for item in iterable:
            yield item
            done += 1
            if time.perf_counter() - last >= every_s:
                last = time.perf_counter()
                handle.update(render(done))
    finally:
        handle.update(HTML(""))      # done: nothing left behind in the saved notebook


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class _Tracker(TrainerCallback):
    """What both displays record: losses per logged step, evaluation per epoch, timing."""

    def __init__(self, *, metric: str):
        self.metric = metric
        self.train_points: list[tuple[float, float]] = []     # (epoch, loss)
        self.eval_points: list[dict] = []                     # {'epoch', 'loss', metric}
        self.started = time.perf_counter()
        self.step, self.max_steps, self.epochs = 0, 0, 0
        self.stopped_by_user = False

    def on_train_begin(self, args, state, control, **kw):
        self.started = time.perf_counter()
        self.max_steps, self.epochs = state.max_steps, args.num_train_epochs
        self.step = state.global_step

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs and state.epoch is not None:
            self.train_points.append((float(state.epoch), float(logs["loss"])))

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        metrics = metrics or {}
        point = {"epoch": float(state.epoch or 0), "loss": metrics.get("eval_loss")}
        if f"eval_{self.metric}" in metrics and self.metric != "loss":
            point[self.metric] = metrics[f"eval_{self.metric}"]
        self.eval_points.append(point)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta(self) -> float | None:
        done = self.step
        return self.elapsed() / done * (self.max_steps - done) if done and self.max_steps else None

    def status_line(self) -> str:
        epoch = self.step / max(self.max_steps, 1) * self.epochs
        eta = self.eta()
        return (f"epoch {epoch:.1f} / {self.epochs:g} · step {self.step} / {self.max_steps} · elapsed "
                f"{_clock(self.elapsed())}" + (f" · about {_clock(eta)} left" if eta is not None else ""))

    def epoch_line(self, epoch: float) -> str:
        loss = next((v for e, v in reversed(self.train_points) if e <= epoch + 1e-9), None)
        parts = [f"epoch {epoch:.0f}/{self.epochs:g}"]
        if loss is not None:
            parts.append(f"train loss {loss:.4f}")
        ev = self.eval_points[-1] if self.eval_points and abs(self.eval_points[-1]["epoch"] - epoch) < 1e-6 else None
        if ev:
            if ev.get("loss") is not None:
                parts.append(f"validation loss {ev['loss']:.4f}")
            if self.metric in ev:
                parts.append(f"{self.metric} {ev[self.metric]:.4f}")
        parts.append(f"({_clock(self.elapsed())})")
        return "  ".join(parts)

    def figure(self):
        import matplotlib.pyplot as plt

        from ..report import PALETTE, plot_style

        with plot_style():
            fig, ax = plt.subplots(figsize=(6, 3))
            if self.train_points:
                ax.plot(*zip(*self.train_points), color=PALETTE[0], label="training loss")
            ev = [p for p in self.eval_points if p.get("loss") is not None]
            if ev:
                ax.plot([p["epoch"] for p in ev], [p["loss"] for p in ev], "o-", color=PALETTE[1], label="validation loss")
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss")
            scored = [p for p in self.eval_points if self.metric in p]
            if scored:
                ax2 = ax.twinx()
                ax2.plot([p["epoch"] for p in scored], [p[self.metric] for p in scored], "s--", color=PALETTE[2],
                         label=f"validation {self.metric}")
                ax2.set_ylabel(self.metric)
                ax2.grid(False)
            # up to the epochs seen so far (and a little room), not the epochs planned: a run planned long and
            # stopped early would otherwise be squeezed against the left edge
            seen = max([e for e, _ in self.train_points] + [p["epoch"] for p in self.eval_points] + [0.0])
            ax.set_xlim(0, min(max(float(self.epochs), 1.0), max(seen * 1.25, 1.0)))
            # one legend for both axes, under the plot: inside it, it covered the lines
            handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
            if handles:
                fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles),
                           frameon=False)
            ax.set_title("Fine-tuning")
        return fig

    def png(self) -> bytes:
        import matplotlib.pyplot as plt

        fig = self.figure()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()


class TerminalProgress(_Tracker):
    """One tqdm bar for the training steps and one plain line per epoch; no raw Trainer dictionaries."""

    def __init__(self, *, metric: str):
        super().__init__(metric=metric)
        self.bar = None
        self._evaluates = False

    def on_train_begin(self, args, state, control, **kw):
        from tqdm.auto import tqdm

        super().on_train_begin(args, state, control, **kw)
        self._evaluates = str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step", leave=False)

    def on_step_end(self, args, state, control, **kw):
        self.step = state.global_step
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_epoch_end(self, args, state, control, **kw):
        if not self._evaluates:
            self._write(self.epoch_line(round(state.epoch or 0)))

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        super().on_evaluate(args, state, control, metrics=metrics, **kw)
        if state.global_step and not getattr(self, "_final", False):
            self._write(self.epoch_line(round(state.epoch or 0)))

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._final = True   # the engine's final trainer.evaluate() prints nothing more

    def _write(self, line: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(line)


class LiveTraining(_Tracker):
    """The notebook widget. ``stop`` is the Stop button; clicking it ends training at the next step."""

    redraw_every_s = 0.5    # status line
    chart_every_s = 1.5     # the chart: a PNG per epoch would cost more than a fast epoch (features cached)

    def __init__(self, *, metric: str, show: bool = True):
        import ipywidgets as w

        super().__init__(metric=metric)
        self.show = show
        self.status = w.HTML("Preparing…")
        self.chart = w.Image(format="png", layout=w.Layout(max_width="640px"))
        self.stop = w.Button(description="Stop", icon="stop", button_style="warning",
                             tooltip="End training after the current step; the run is returned as usual")
        self.table = w.HTML("")
        self.widget = w.VBox([w.HBox([self.stop, self.status]), self.chart, self.table])
        self.stop.on_click(self._on_stop)
        self._handle = None
        self._last_draw, self._last_chart = 0.0, float("-inf")
        self._clicked = None      # set by a Stop click even while the training cell runs (see _clicks)
        self.summary_html = ""

    def _on_stop(self, _button=None) -> None:
        self.stopped_by_user = True
        self.stop.disabled = True
        self.stop.description = "Stopping…"

    def on_train_begin(self, args, state, control, **kw):
        super().on_train_begin(args, state, control, **kw)
        self.status.value = html.escape(self.status_line())
        if self.show:
            from IPython.display import display

            from ._clicks import watch_clicks

            self._clicked = watch_clicks(self.stop)
            if self._clicked is None:   # a kernel where a click waits for the cell to end: say so, don't pretend
                self.stop.disabled = True
                self.stop.tooltip = "Stop needs ipykernel 7 or newer in this kernel; interrupt the kernel instead"
            self._handle = display(self.widget, display_id=True)

    def on_step_end(self, args, state, control, **kw):
        self.step = state.global_step
        now = time.perf_counter()
        if self._clicked is not None and self._clicked.is_set() and not self.stopped_by_user:
            self._on_stop()
        if now - self._last_draw >= self.redraw_every_s:
            self._last_draw = now
            self.status.value = html.escape(self.status_line())
        if self.stopped_by_user:
            control.should_training_stop = True

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        super().on_evaluate(args, state, control, metrics=metrics, **kw)
        self._draw_chart()
        self.table.value = self._table_html()

    def on_epoch_end(self, args, state, control, **kw):
        if not self.eval_points:
            self._draw_chart()

    def _draw_chart(self) -> None:
        now = time.perf_counter()
        if now - self._last_chart >= self.chart_every_s:
            self._last_chart = now
            self.status.value = html.escape(self.status_line())   # the counters agree with the chart drawn
            self.chart.value = self.png()

    def _table_html(self) -> str:
        """The last 8 validation results; nothing where the run has no validation data (not an empty table)."""
        from ..report import notebook_safe

        if not self.eval_points:
            return ""
        head = "<tr><th>epoch</th><th>validation loss</th>" + (f"<th>{html.escape(self.metric)}</th>" if self.metric != "loss" else "") + "</tr>"
        rows = "".join(
            f"<tr><td>{p['epoch']:.1f}</td><td>{p['loss'] if p.get('loss') is None else format(p['loss'], '.4f')}</td>"
            + (f"<td>{p[self.metric]:.4f}</td>" if self.metric in p else "") + "</tr>" for p in self.eval_points[-8:])
        return notebook_safe(f"<table style='font-size:12px'>{head}{rows}</table>")

    def on_train_end(self, args, state, control, **kw):
        self.step = state.global_step
        how = (f"Stopped with the Stop button at step {self.step} of {self.max_steps}" if self.stopped_by_user
               else f"Finished {self.step} steps")
        self.stop.disabled, self.stop.description = True, "Stopped" if self.stopped_by_user else "Done"
        self.status.value = html.escape(f"{how} · {_clock(self.elapsed())}")
        png = base64.b64encode(self.png()).decode()
        self.summary_html = (f'<div class="appkit-training"><b>Fine-tuning</b>: {html.escape(how)} '
                             f"(epoch {state.epoch or 0:.1f} of {self.epochs:g}) in {_clock(self.elapsed())}.<br>"
                             f'<img alt="training and validation loss per epoch" src="data:image/png;base64,{png}"/>'
                             f"{self._table_html()}</div>")
        if self._handle is not None:
            # the saved notebook keeps this static summary; the live widget's state is not saved with it
            from IPython.display import HTML

            self._handle.update(HTML(self.summary_html))
            from ._clicks import unwatch

            unwatch(self.stop)
            # no comm left open for parts nobody can see any more; the Stop button stays open, because a
            # click seen during the cell still reaches the kernel after it (its handler must find the button)
            for part in (self.status, self.chart, self.table, *self.widget.children, self.widget):
                if part is not self.stop:
                    part.close()


class TrialDisplay:
    """An optuna callback for ``tune()``: each finished trial as it finishes, the best so far, a small scatter.

    In a notebook one output updated in place (static HTML, so it survives a reopen); in a terminal one line per trial."""

    def __init__(self, *, metric: str, direction: str, n_trials: int | None, show: bool = True):
        self.metric, self.direction, self.n_trials = metric, direction, n_trials
        self.rows: list[dict] = []
        self.notebook = show and in_notebook()
        self._handle = None
        self.html = ""

    def __call__(self, study, trial) -> None:
        if trial.value is None:
            return
        self.rows.append({"trial": trial.number, self.metric: trial.value, **trial.params,
                          "seconds": trial.duration.total_seconds() if trial.duration else None})
        best = study.best_trial
        line = (f"trial {len(self.rows)}{'/' + str(self.n_trials) if self.n_trials else ''}: {self.metric} "
                f"{trial.value:.4f} (best {best.value:.4f}, trial {best.number}) "
                + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()))
        if not self.notebook:
            from tqdm.auto import tqdm

            tqdm.write(line)
            return
        from IPython.display import HTML, display

        self.html = self._render(best.number)
        if self._handle is None:
            self._handle = display(HTML(self.html), display_id=True)
        else:
            self._handle.update(HTML(self.html))

    def finish(self) -> None:
        """The search is over: the live output keeps its plot and drops its table, which the returned
        ``TuneResult`` shows (a notebook printed the same trials twice)."""
        if self._handle is None or not self.rows:
            return
        from IPython.display import HTML

        best = max(self.rows, key=lambda r: r[self.metric] * (1 if self.direction == "maximize" else -1))
        self.html = self._render(best["trial"], table=False)
        self._handle.update(HTML(self.html))

    def _render(self, best_number: int, *, table: bool = True) -> str:
        import matplotlib.pyplot as plt

        from ..report import PALETTE, notebook_safe, plot_style

        with plot_style():
            fig, ax = plt.subplots(figsize=(4, 2.6))
            xs = [r["trial"] for r in self.rows]
            ys = [r[self.metric] for r in self.rows]
            ax.scatter(xs, ys, color=PALETTE[0])
            best = [r for r in self.rows if r["trial"] == best_number]
            if best:
                ax.scatter([best[0]["trial"]], [best[0][self.metric]], color=PALETTE[3], s=80, label="best so far")
                # under the plot: inside it, the legend's own marker read as one more trial
                fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False)
            ax.set_xlabel("trial")
            ax.set_ylabel(self.metric)
            ax.set_title(f"Search ({self.direction} {self.metric})")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        if not table:
            return notebook_safe(
                f"<div><b>Hyperparameter search</b>: {len(self.rows)} trials done, best is trial {best_number} "
                f"(every trial in the table below).<br><img alt='metric per trial' "
                f"src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'/></div>")
        cols = list(self.rows[0])
        body = "".join("<tr>" + "".join(f"<td>{v:.4g}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>"
                                        for v in (r.get(c) for c in cols)) + "</tr>" for r in self.rows)
        table = f"<table style='font-size:12px'><tr>{''.join(f'<th>{html.escape(c)}</th>' for c in cols)}</tr>{body}</table>"
        return notebook_safe(
            f"<div><b>Hyperparameter search</b>: {len(self.rows)}{' of ' + str(self.n_trials) if self.n_trials else ''} "
            f"trials done, best is trial {best_number}.<br><img alt='metric per trial' "
            f"src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'/>{table}</div>")
