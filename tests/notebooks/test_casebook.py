"""appkit.casebook on a two-cell notebook: the kernel is this interpreter, the page hides the code."""
from __future__ import annotations

import json
import sys

import pytest


def _notebook(path, source: str):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A tiny case\nSome story."),
                nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)
    return path


def test_kernelspec_starts_this_interpreter(tmp_path):
    from appkit import casebook

    spec = json.loads((casebook.kernel_dir(tmp_path) / "kernels" / casebook.KERNEL_NAME / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable and "{connection_file}" in spec["argv"]


@pytest.mark.notebook
def test_run_all_executes_in_this_interpreter_and_publishes_without_code(tmp_path):
    from appkit import casebook

    ok = _notebook(tmp_path / "a.ipynb", "import os, sys\nprint('EXE', sys.executable, 'QUICK', os.environ['APPKIT_QUICK'])")
    bad = _notebook(tmp_path / "b.ipynb", "raise ValueError('broken on purpose')")
    runs = casebook.run_all(tmp_path / "out", notebooks=[ok, bad], quick=True, workers=2, cwd=tmp_path,
                            extra={"Another report": "other.html"})
    good, broken = runs
    assert good.error is None and broken.error is not None
    page = good.html.read_text()
    assert f"EXE {sys.executable} QUICK 1" in page
    assert "print(" not in page and "A tiny case" in page          # outputs and story, no code
    assert broken.html is not None and "broken on purpose" in broken.html.read_text()
    index = (tmp_path / "out" / "index.html").read_text()
    assert 'href="a.html"' in index and 'href="b.html"' in index and "FAILED" in index and 'href="other.html"' in index
