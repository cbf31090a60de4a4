"""Every notebook runs top to bottom in a real Jupyter kernel, as a user would run it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
# what each notebook must show a stakeholder, beyond running without error
EXPECT = {
    "00-quickstart.ipynb": ["Where it goes wrong", "Worst errors", "macro_f1", "Hyperparameter search"],
}


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_shows_its_results(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    work = tmp_path / path.name
    shutil.copy(path, work)
    nb = nbformat.read(work, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    shown = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            data = out.get("data", {})
            shown.append(str(data.get("text/html", "")) + str(data.get("text/plain", "")) + str(out.get("text", "")))
    text = "\n".join(shown)
    for needle in EXPECT.get(path.name, []):
        assert needle in text, f"{path.name} no longer shows {needle!r}"
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])), "no plot rendered"
