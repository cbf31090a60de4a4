"""Run the case-study notebooks in a real Jupyter kernel and publish them for stakeholders.

    python -m appkit.casebook run notebooks/ --out reports/ [--quick] [--workers 2]

Each notebook runs top to bottom in a kernel of *this* interpreter (a kernelspec written to a
temporary JUPYTER_PATH whose argv is ``sys.executable``, so a user-level "python3" kernel of
another Python can never be picked up), two at a time on separate processes. Each executed
notebook is written as ``<name>.html`` without code cells (the story, tables and charts only),
and ``index.html`` links them. ``--quick`` sets ``APPKIT_QUICK=1``: the notebooks' parameters
cell then shrinks the work (rows, epochs, trials) so that CI runs them all in a few minutes.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import AppkitError, _msg

KERNEL_NAME = "appkit-casebook"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@dataclass
class NotebookRun:
    source: Path
    executed: Path | None
    html: Path | None
    seconds: float              # wall clock
    error: str | None = None
    cpu_seconds: float = 0.0    # the notebook's process and its kernel together


def kernel_dir(root: Path) -> Path:
    """A JUPYTER_PATH folder holding one kernelspec that starts this interpreter."""
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"appkit ({sys.executable})", "language": "python",
    }))
    return root


def execute(source: Path, executed: Path, *, cwd: Path, quick: bool, timeout: int = 900) -> None:
    """Run one notebook in this interpreter's kernel (in this process) and write the executed copy."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(source, as_version=4)
    os.environ["APPKIT_QUICK"] = "1" if quick else "0"   # the kernel inherits it; the parameters cell reads it
    with tempfile.TemporaryDirectory(prefix="appkit-kernel-") as tmp:
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(kernel_dir(Path(tmp))),
                                                                   os.environ.get("JUPYTER_PATH")]))
        client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL_NAME,
                                resources={"metadata": {"path": str(cwd)}})
        try:
            client.execute()
        finally:  # a failed notebook is still written: its error output is what the reader needs
            executed.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, executed)


def to_html(executed: Path, out: Path) -> Path:
    """The executed notebook as a page without code: markdown, tables, charts, printed results."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    out.write_text(body, encoding="utf-8")
    return out


def _title(executed: Path) -> str:
    import nbformat

    for cell in nbformat.read(executed, as_version=4).cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return executed.stem


def run_one(source: Path, out: Path, *, quick: bool, cwd: Path, timeout: int = 900, threads: int | None = None) -> NotebookRun:
    """Execute `source` in a child process (its own kernel and memory), then write its HTML page.

    threads: torch/OpenMP threads of the kernel. Two kernels each spinning two threads on two cores
    spend much of their time waiting on each other, so run_all gives each its share of the cores.
    """
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    executed = out / "executed" / source.name
    executed.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "appkit.casebook", "_execute", str(source), str(executed),
                                  "--cwd", str(cwd), "--timeout", str(timeout)] + (["--quick"] if quick else []),
                                 stdout=subprocess.DEVNULL, stderr=err, env=env)
        # wait4: the CPU time of the child and of the kernel it reaped, the honest cost on a shared machine
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    seconds = time.perf_counter() - t0
    # the last line of the traceback names the error; nbclient colours it for a terminal
    last = (re.sub(r"\x1b\[[0-9;]*m", "", stderr).strip().splitlines() or ["failed"])[-1]
    error = None if child.returncode == 0 else last[:2000]
    page = to_html(executed, out / f"{source.stem}.html") if executed.exists() else None
    return NotebookRun(source, executed if executed.exists() else None, page, seconds, error,
                       cpu_seconds=usage.ru_utime + usage.ru_stime)


def write_index(runs: list[NotebookRun], out: Path, *, extra: dict[str, str] | None = None) -> Path:
    items = []
    for r in runs:
        title = _title(r.executed) if r.executed else r.source.stem
        status = f"ran in {r.seconds:.0f} s" if not r.error else f"FAILED: {html.escape(r.error[:300])}"
        link = f'<a href="{html.escape(r.html.name)}">{html.escape(title)}</a>' if r.html else html.escape(title)
        items.append(f"<li>{link} <small>({html.escape(r.source.name)}, {status})</small></li>")
    for name, href in (extra or {}).items():
        items.append(f'<li><a href="{html.escape(href)}">{html.escape(name)}</a></li>')
    page = out / "index.html"
    page.write_text("<!doctype html><meta charset='utf-8'><title>appkit case studies</title>"
                    "<body style='font-family:sans-serif;max-width:50em;margin:2em auto'>"
                    "<h1>appkit case studies</h1><p>Each page is a notebook run top to bottom on this machine, "
                    "offline, shown without its code.</p><ul>" + "\n".join(items) + "</ul></body>", encoding="utf-8")
    return page


def run_all(out, *, notebooks=None, quick: bool = False, workers: int = 2, cwd=None, timeout: int = 900,
            extra: dict[str, str] | None = None) -> list[NotebookRun]:
    """Run every notebook (two at a time), write one HTML page each and index.html into `out`."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(Path(p) for p in notebooks) if notebooks is not None else sorted(NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        raise AppkitError(_msg("No notebooks to run", where=str(NOTEBOOKS), expected="*.ipynb files"))
    cwd = Path(cwd).resolve() if cwd else Path.cwd()  # where the notebooks save models/ and reports/
    workers = max(1, min(workers, len(paths)))
    threads = None if "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        runs = list(pool.map(lambda p: run_one(p.resolve(), out, quick=quick, cwd=cwd, timeout=timeout,
                                               threads=threads), paths))
    write_index(runs, out, extra=extra)
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m appkit.casebook", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the notebooks and write the HTML pages and index")
    r.add_argument("notebooks", nargs="*", type=Path)
    r.add_argument("--out", default="reports", type=Path)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--workers", type=int, default=2)
    x = sub.add_parser("_execute")  # internal: one notebook in this process (run_one's child)
    x.add_argument("source", type=Path)
    x.add_argument("executed", type=Path)
    x.add_argument("--cwd", type=Path, required=True)
    x.add_argument("--quick", action="store_true")
    x.add_argument("--timeout", type=int, default=900)
    a = ap.parse_args(argv)
    if a.cmd == "_execute":
        execute(a.source, a.executed, cwd=a.cwd, quick=a.quick, timeout=a.timeout)
        return 0
    nbs = [p for n in a.notebooks for p in (sorted(n.glob("*.ipynb")) if n.is_dir() else [n])] or None
    runs = run_all(a.out, notebooks=nbs, quick=a.quick, workers=a.workers)
    for run in runs:
        print(f"{run.source.name:28s} {run.seconds:6.0f} s wall {run.cpu_seconds:6.0f} s CPU  "
              f"{'ok' if not run.error else 'FAILED: ' + run.error}")
    print(f"Index: {a.out / 'index.html'}")
    return 0 if all(not r.error for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
