"""The notebook path in a real Jupyter kernel (nbclient, no browser): fine_tune picks the live widget,
sees the Stop button's click while the cell runs, and leaves a static summary in the saved
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
    # nor a progress bar widget (features, batches): the saved notebook holds no widget view at all from training
    assert not [o for o in outs[1] if "application/vnd.jupyter.widget-view+json" in o.get("data", {})], outs[1]
    assert not any("{'loss'" in str(o.get("text", "")) for o in outs[1])
    report_html = next(o["data"]["text/html"] for o in outs[2] if "text/html" in o.get("data", {}))
    assert "<span>$</span>8/month" in report_html
    shown = next(o["data"]["text/plain"] for o in outs[3] if "text/plain" in o.get("data", {}))
    assert "'accuracy': " in shown and len(shown.split("'accuracy': ")[1].split(",")[0]) <= 6, shown


@pytest.mark.notebook
def test_stop_click_reaches_a_running_fine_tune_and_run_all_keeps_its_order(tmp_path, monkeypatch):
    """What JupyterLab does, over the kernel protocol: Run All sends every cell at once, then the user clicks
    Stop while the training cell runs. The click must end training (ipykernel 7 reads no widget message while
    a cell runs unless appkit reads it), and the cells queued behind it must still run, once and in order."""
    import queue
    import time

    from jupyter_client.manager import start_new_kernel

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        kc.execute(CELLS[0])
        kc.execute("run = clf.fine_tune(text_train_frame(48), eval_data=text_train_frame(8), epochs=50000, "
                   "batch_size=8, checkpoints=False, output_dir='run')\nprint('RETURNED', run.history.step.max())")
        kc.execute("print('SECOND', 'run' in dir())")
        kc.execute("print('THIRD')")
        stop, clicked, seen, deadline = None, None, [], time.time() + 300
        while time.time() < deadline and "THIRD" not in "".join(seen):
            try:
                msg = kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "comm_open" and content["data"]["state"].get("description") == "Stop":
                stop = content["comm_id"]
            elif kind == "comm_msg" and stop and clicked is None and "· step " in str(content["data"].get("state", {}).get("value", "")):
                step = int(content["data"]["state"]["value"].split("· step ")[1].split(" ")[0])
                if step >= 12:    # two epochs in: the training loop is surely running
                    kc.shell_channel.send(kc.session.msg("comm_msg", {"comm_id": stop, "data": {
                        "method": "custom", "content": {"event": "click"}}}))
                    clicked = time.time()
            elif kind == "stream":
                seen.append(content["text"])
            elif kind == "error":
                pytest.fail(f"{content['ename']}: {content['evalue']}")
        out = "".join(seen)
        assert clicked is not None, "the live widget never showed a step count past 12"
        assert "RETURNED" in out, out[-2000:]
        returned = int(out.split("RETURNED ")[1].split()[0])
        assert returned < 50000 * 6 / 100, out      # ended by the click, not by the 300 000 planned steps
        assert out.index("RETURNED") < out.index("SECOND True") < out.index("THIRD"), out
        assert out.count("SECOND") == 1 and out.count("THIRD") == 1
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
