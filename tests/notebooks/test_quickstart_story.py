"""The quickstart's story must hold on the real data: the notebook runs in a real kernel (the venv's own
interpreter) and what its text claims is checked against the numbers it printed."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "00-quickstart.ipynb"

# appended to the user's notebook: it prints what the assertions below read
_FACTS = """
import json as _json
_cmp = comparison.to_dict()
print("FACTS" + _json.dumps({"comparison": _cmp, "strategy": run.strategy, "chosen": run.params, "notes": run.notes,
                             "calibration": run.calibration, "tuned": search.extra,
                             "closing": pipeline("text-classification", model=str(folder))(
                                 "Worked well, only a mild headache the first week.")[0]["label"],
                             "again": list(again.predict(test, column="text").pred_label),
                             "labels": list(test.label)}, default=float))
"""


@pytest.mark.notebook
def test_quickstart_fine_tuning_beats_zero_shot_and_the_majority_and_is_calibrated(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from appkit.casebook import KERNEL_NAME, kernel_dir

    # a kernel of this interpreter (the venv under test), not whatever a user-level "python3" spec starts
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir(tmp_path / "jupyter")))
    kernel = KERNEL_NAME
    work = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, work)
    nb = nbformat.read(work, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(_FACTS))
    NotebookClient(nb, timeout=900, kernel_name=kernel, resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot rendered"
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    facts = json.loads(text.split("FACTS", 1)[1].splitlines()[0])
    cmp = facts["comparison"]
    ft, names, desc = cmp["fine-tuned"], cmp["zero-shot (label names)"], cmp["zero-shot (descriptions)"]
    majority = cmp["always 'positive'"]
    # the story the notebook tells, on the numbers it printed
    assert ft["macro_f1"] > max(names["macro_f1"], desc["macro_f1"], majority["macro_f1"]) + 0.03, cmp
    assert ft["calibration_error"] <= min(names["calibration_error"], desc["calibration_error"]), cmp
    assert ft["accuracy"] >= majority["accuracy"] - 0.03, cmp    # no worse than "always positive" either
    # what the markdown says: the probe, its layer chosen by the search on 5 splits, the same choice as tune()'s
    assert facts["strategy"] == "probe" and facts["chosen"] == facts["tuned"], facts
    assert facts["calibration"]["error_after"] <= facts["calibration"]["error_before"]
    assert any("5-fold cross-validation on the 600 training rows" in n for n in facts["notes"]), facts["notes"]
    # the saved model answers like the notebook's model did, and the closing example reads as positive
    again_acc = sum(p == t for p, t in zip(facts["again"], facts["labels"])) / len(facts["labels"])
    assert again_acc == pytest.approx(ft["accuracy"], abs=0.01)
    assert facts["closing"] == "positive"
