"""A real JupyterLab on loopback, opened in headless Chromium (Debian's chromium driven by playwright):
a notebook fine-tunes a tiny model and the test clicks the live widget's Stop button, checks that a report
holding dollar amounts is not typeset as math, pages the error browser, types into the demo, then saves,
shuts the kernel down and reopens the notebook: it must show the static copies, not "Error displaying widget".

Screenshots are kept in tests/artifacts/browser/ (git-ignored); the path is printed. Fixtures: conftest.py."""
from __future__ import annotations

import pytest

from .conftest import ARTIFACTS, open_and_run_all, save_and_reopen_without_kernel, shot, step, write_notebook

pytestmark = pytest.mark.browser

CELLS = [
    # 0: a tiny random model and toy data, built here (nothing from outside)
    "import appkit, appkit.widgets\nfrom pathlib import Path\nfrom appkit.tasks.base import quiet_transformers\n"
    "from tests.conftest import make_tiny_bert_folder, text_train_frame\n"
    "with quiet_transformers():   # the test's own model-building has a transformers save bar: not appkit's\n"
    "    folder = make_tiny_bert_folder(Path('tiny'))\n"
    "clf = appkit.load('text-classification', folder, labels=['negative', 'positive'])\n"
    "train, held = text_train_frame(48), text_train_frame(8)",
    # 1: long enough that only the Stop button ends it in time
    "run = clf.fine_tune(train, eval_data=held, epochs=50000, batch_size=8, checkpoints=False, output_dir='run')\n"
    "print('RUN-RETURNED', int(run.history.step.max()), run.interrupted)",
    # 2: a report whose examples hold dollar amounts
    "test = text_train_frame(40)\n"
    "test.loc[:3, 'text'] = 'it cost me $8/month, later about $100 and it is bad'  # two labels: some wrong\n"
    "report = clf.evaluate(test)\nreport",
    "report.explore(page_size=3)",
    "appkit.widgets.demo(clf)",
]


def test_live_training_stop_report_explore_demo_and_reopen_in_a_real_browser(lab, page):
    write_notebook(lab.work / "live.ipynb", CELLS)
    open_and_run_all(page, lab, "live.ipynb")
    # the live widget: counters move and the chart is drawn, then Stop
    stop = page.locator(".widget-button", has_text="Stop")
    stop.wait_for()
    page.wait_for_function("() => /step [1-9]\\d* \\/ /.test(document.body.innerText)", polling=250)
    page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea .widget-image')]"
                           ".some(i => i.naturalWidth > 100)", polling=250)
    stop.scroll_into_view_if_needed()
    step("live widget shows steps and a chart")
    shot(page, "1-training-live.png")
    stop.click()
    page.locator(".jp-OutputArea-output", has_text="RUN-RETURNED").wait_for()
    out = page.locator(".jp-OutputArea-output", has_text="RUN-RETURNED").inner_text()
    steps, interrupted = out.split()[1], out.split()[2]
    assert int(steps) < 3000 and interrupted == "False", out     # 300 000 steps were planned: Stop ended it
    step(f"fine_tune returned after {steps} steps")
    summary = page.locator(".appkit-training")
    summary.wait_for()        # the live widget was replaced by its static summary
    assert f"Stopped with the Stop button at step {steps}" in summary.inner_text()
    summary.scroll_into_view_if_needed()
    shot(page, "2-training-stopped-static-summary.png")
    # the report: dollar amounts stay text, MathJax typesets nothing in it
    rep = page.locator(".appkit-report").first
    rep.wait_for()
    page.wait_for_timeout(1500)             # MathJax typesets asynchronously: give it the chance
    rep.locator("text=Worst errors").scroll_into_view_if_needed()
    text = rep.inner_text()
    assert "$8/month, later about $100" in text, text[:2000]
    assert rep.locator("mjx-container, .MathJax, .MathJax_Preview").count() == 0
    assert "Right " in text and "95% CI" in text
    first_input = rep.locator("h3", has_text="Worst errors").locator("xpath=following-sibling::div[1]//td").first
    assert "$8/month" in first_input.inner_text()
    assert first_input.evaluate("td => getComputedStyle(td).textAlign") in ("left", "start")   # text reads left
    shot(page, "3-report-dollars-as-text.png")
    # the error browser: page through
    page.locator(".widget-html", has_text="items 1-").first.wait_for()
    page.locator(".widget-button", has_text="next").first.click()
    page.locator(".widget-html", has_text="items 4-").first.wait_for()
    page.locator(".widget-slider").first.scroll_into_view_if_needed()
    shot(page, "4-explore.png")
    # the demo: type, predict, see the label and the bars
    box = page.locator(".widget-textarea textarea").first
    box.fill("great product, only $5")
    page.locator(".widget-button", has_text="Predict").first.click()
    page.locator(".widget-html", has_text="sure)").first.wait_for()
    box.scroll_into_view_if_needed()
    shot(page, "5-demo.png")
    # while the widgets live, their static copies are hidden
    assert page.locator(".appkit-static").count() == 2
    assert not any(page.locator(".appkit-static").nth(i).is_visible() for i in range(2))

    # saved, closed, reopened: no kernel holds the widgets any more
    save_and_reopen_without_kernel(page, lab, "live.ipynb")
    page.locator(".appkit-training").wait_for()
    # the widget manager has given up on the two widget outputs (no model in the new kernel): settled
    page.wait_for_function("() => document.querySelectorAll("
                           "'.jp-OutputArea-child > .jp-OutputArea-output.jupyter-widgets').length === 2", polling=250)
    body = page.locator(".jp-Notebook").inner_text()
    assert "Error displaying widget" not in body and "Loading widget" not in body, body[-3000:]
    assert "Stopped with the Stop button" in page.locator(".appkit-training").inner_text()
    copies = page.locator(".appkit-static")
    assert copies.count() == 2 and copies.nth(0).is_visible() and copies.nth(1).is_visible()
    assert "items 4-" in copies.nth(0).inner_text()                          # the page the user left it on
    assert "great product, only $5" in copies.nth(1).inner_text() and "sure)" in copies.nth(1).inner_text()
    copies.nth(1).scroll_into_view_if_needed()
    shot(page, "6-reopened-static-copies.png")
    print(f"\nscreenshots: {ARTIFACTS}")
