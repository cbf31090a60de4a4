"""Every notebook runs top to bottom in a real Jupyter kernel, as a user would run it, and shows its results.

The notebooks run once per session, two at a time, in kernels of the interpreter under test
(appkit.casebook writes the kernelspec), with APPKIT_QUICK=1 so their parameters cell shrinks the
work. Each test then reads one executed notebook: no error output, a chart, and the numbers that
carry its story (a fine-tuned model that beats the majority-class baseline, a decision analysis).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

# the case studies; the quickstart runs in a real JupyterLab, where its story is checked
# (tests/browser/test_quickstart_page.py)
NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("0[1-9]-*.ipynb"))
# what each notebook must show a stakeholder, beyond running without error
EXPECT = {
    "01-finance.ipynb": ["Acting when P(spam)", "no model at all", "WER over", "In plain words", "Saved to"],
    "02-medical.ipynb": ["are referred", "SYNTHETIC", "After fine-tuning", "In plain words", "Saved to"],
    "03-security.ipynb": ["alerts a day", "Acting when P(attack)", "In plain words", "Saved to"],
    "04-education.ipynb": ["small CNN from scratch", "Captions with timestamps", "are referred", "HEADLINE help pages chrF",
                           "Saved to"],
    "05-ecommerce.ipynb": ["are referred", "SYNTHETIC", "In plain words", "HEADLINE shop strings chrF", "Saved to"],
}
# "HEADLINE <name>: model=<x> baseline=<y>" lines printed by the notebooks: the fine-tuned model must win
HEADLINE = re.compile(r"HEADLINE (?P<name>[^:]+): model=(?P<model>[\d.]+) baseline=(?P<base>[\d.]+)")


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    from appkit import casebook

    out = tmp_path_factory.mktemp("casebook")
    runs = casebook.run_all(out, notebooks=NOTEBOOKS, quick=True, workers=2, cwd=out)
    return {r.source.name: r for r in runs}


def _outputs(path: Path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _text(outputs) -> str:
    return "\n".join(str(o.get("data", {}).get("text/html", "")) + str(o.get("data", {}).get("text/plain", ""))
                     + str(o.get("text", "")) for o in outputs)


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_shows_its_results(path, executed):
    run = executed[path.name]
    assert run.executed is not None, run.error
    outputs = _outputs(run.executed)
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors and not run.error, (run.error, [(e["ename"], e["evalue"]) for e in errors])
    text = _text(outputs)
    for needle in EXPECT.get(path.name, []):
        assert needle in text, f"{path.name} no longer shows {needle!r}"
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot rendered"
    if path.name != "00-quickstart.ipynb":
        heads = list(HEADLINE.finditer(text))
        assert heads, f"{path.name} prints no HEADLINE line"
        for h in heads:
            assert float(h["model"]) > float(h["base"]), f"{path.name}: {h.group(0)}"
        page = run.html.read_text()            # the stakeholder page: results without code
        assert "HEADLINE" in page and "import appkit" not in page


@pytest.mark.notebook
def test_the_casebook_index_links_every_page(executed):
    index = next(iter(executed.values())).html.parent / "index.html"
    page = index.read_text()
    for name, run in executed.items():
        assert run.html is not None and f'href="{run.html.name}"' in page, name


@pytest.mark.notebook
def test_no_notebook_defines_functions_or_classes():
    import nbformat

    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert not re.search(r"^\s*(def|class)\s", cell.source, re.M), f"{path.name}: move it into appkit"


@pytest.mark.notebook
def test_every_case_notebook_has_a_parameters_cell_that_reads_appkit_quick():
    import nbformat

    for path in NOTEBOOKS:
        if path.name.startswith("00-"):
            continue
        first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "parameters" in first.metadata.get("tags", []) and "APPKIT_QUICK" in first.source, path.name
