"""The notebook path in a real Jupyter kernel (nbclient, no browser): fine_tune picks the live widget,
reads the Stop button through jupyter-ui-poll while the cell runs, and leaves a static summary in the saved
notebook in place of the widget; metrics print rounded; the report's HTML escapes dollar signs."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CELLS = [
    "import appkit\nfrom pathlib import Path\nfrom tests.conftest import make_tiny_bert_folder, text_train_frame\n"
    "clf = appkit.load('text-classification', make_tiny_bert_folder(Path('tiny')), labels=['negative', 'positive'])",
    "run = clf.fine_tune(text_train_frame(), eval_data=text_train_frame(8), epochs=3, batch_size=8, checkpoints=False,"
    " output_dir='run')",
    "test = text_train_frame(12)\ntest.loc[:3, 'text'] = 'it cost me $8/month, later about $100'\n"
    "report = clf.evaluate(test)\nreport",
    "report.metrics",
]


@pytest.mark.notebook
def test_fine_tune_in_a_kernel_leaves_a_static_summary_and_rounded_metrics(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outs = [c.outputs for c in nb.cells]
    for cell in outs:
        assert not [o for o in cell if o.output_type == "error"], cell
    training = [o for o in outs[1] if "text/html" in o.get("data", {}) and "appkit-training" in o["data"]["text/html"]]
    assert len(training) == 1, outs[1]
    assert "Finished 9 steps" in training[0]["data"]["text/html"]
    assert "application/vnd.jupyter.widget-view+json" not in training[0]["data"]   # nothing left to fail on reopen
    assert not any("{'loss'" in str(o.get("text", "")) for o in outs[1])
    report_html = next(o["data"]["text/html"] for o in outs[2] if "text/html" in o.get("data", {}))
    assert "<span>$</span>8/month" in report_html
    shown = next(o["data"]["text/plain"] for o in outs[3] if "text/plain" in o.get("data", {}))
    assert "'accuracy': " in shown and len(shown.split("'accuracy': ")[1].split(",")[0]) <= 6, shown
