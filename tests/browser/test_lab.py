"""A real JupyterLab on loopback, opened in headless Chromium (Debian's chromium driven by playwright):
a notebook fine-tunes a tiny model and the test clicks the live widget's Stop button, checks that a report
holding dollar amounts is not typeset as math, pages the error browser, and types into the demo.

Screenshots are kept in tests/artifacts/browser/ (git-ignored); the path is printed.
Recipe and traps: ../shared/BROWSER-TESTS.md (never `playwright install`: Debian's chromium is used)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make sysdeps)")]

CELLS = [
    # 0: a tiny random model and toy data, built here (nothing from outside)
    "import appkit, appkit.widgets\nfrom pathlib import Path\n"
    "from tests.conftest import make_tiny_bert_folder, text_train_frame\n"
    "clf = appkit.load('text-classification', make_tiny_bert_folder(Path('tiny')), labels=['negative', 'positive'])\n"
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


def _notebook(path: Path) -> None:
    nb = {"cells": [{"cell_type": "code", "id": f"cell-{i}", "metadata": {}, "source": src, "outputs": [],
                     "execution_count": None} for i, src in enumerate(CELLS)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab in its own process group; the whole group (server and kernel) is stopped afterwards."""
    work, conf = tmp_path / "work", tmp_path / "jupyter"
    work.mkdir()
    settings = conf / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    _notebook(work / "live.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(conf / "config"), "JUPYTER_RUNTIME_DIR": str(conf / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(conf / "lab-settings"), "JUPYTERLAB_WORKSPACES_DIR": str(conf / "ws"),
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
           f"--ServerApp.root_dir={work}", f"--IdentityProvider.token={token}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
           "--expose-app-in-browser", "--allow-root"]
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300   # 5 s idle; minutes on a loaded 2-core machine
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield f"{base}/lab/tree/live.ipynb?token={token}"
    finally:
        # kernels run in their own session: ask the server to shut them down, then end the server's group
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=10)
            proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=10)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()


def _step(what: str) -> None:
    print(f"[browser test {time.strftime('%H:%M:%S')}] {what}", flush=True)


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=False)


def test_live_training_stop_report_explore_and_demo_in_a_real_browser(lab):
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(600_000)     # seconds on an idle machine; minutes on 2 cores shared with training jobs
        try:
            _step("open JupyterLab")
            page.goto(lab, wait_until="commit")
            page.wait_for_function("() => window.jupyterapp && jupyterapp.shell.currentWidget && "
                                   "jupyterapp.shell.currentWidget.sessionContext?.session?.kernel?.status === 'idle'",
                                   polling=500)
            _step("kernel idle: run all cells")
            page.evaluate("() => jupyterapp.commands.execute('notebook:run-all-cells')")
            # the live widget: counters move, then Stop
            stop = page.locator(".widget-button", has_text="Stop")
            stop.wait_for()   # kernel start, imports, feature cache
            page.wait_for_function("() => /step [1-9]\\d* \\/ /.test(document.body.innerText)", polling=500)
            page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea img')].some(i => i.naturalWidth > 100)",
                                   polling=500)
            stop.scroll_into_view_if_needed()
            _step("live widget shows steps and a chart")
            _shot(page, "1-training-live.png")
            stop.click()
            page.get_by_text("RUN-RETURNED").wait_for()
            out = page.locator(".jp-OutputArea-output", has_text="RUN-RETURNED").inner_text()
            steps, interrupted = out.split()[1], out.split()[2]
            assert int(steps) < 50000 * 6 and interrupted == "False", out
            _step(f"fine_tune returned after {steps} steps")
            summary = page.locator(".appkit-training")
            summary.wait_for()        # the live widget was replaced by its static summary
            assert "Stopped with the Stop button" in summary.inner_text()
            summary.scroll_into_view_if_needed()
            _shot(page, "2-training-stopped-static-summary.png")
            # the report: dollar amounts stay text, MathJax typesets nothing in it
            rep = page.locator(".appkit-report").first
            rep.wait_for()
            page.wait_for_timeout(1500)             # MathJax typesets asynchronously: give it the chance
            rep.locator("text=Worst errors").scroll_into_view_if_needed()
            text = rep.inner_text()
            assert "$8/month, later about $100" in text, text[:2000]
            assert rep.locator("mjx-container, .MathJax, .MathJax_Preview").count() == 0
            assert "Right " in text and "95% CI" in text
            _shot(page, "3-report-dollars-as-text.png")
            # the error browser: page through
            pos = page.locator(".widget-html", has_text="items 1-")
            pos.first.wait_for()
            page.locator(".widget-button", has_text="next").first.click()
            page.locator(".widget-html", has_text="items 4-").first.wait_for()
            page.locator(".widget-slider").first.scroll_into_view_if_needed()
            _shot(page, "4-explore.png")
            # the demo: type, predict, see the label and the bars
            box = page.locator(".widget-textarea textarea").first
            box.wait_for()
            box.fill("great product, only $5")
            page.locator(".widget-button", has_text="Predict").first.click()
            page.locator(".widget-html", has_text="sure)").first.wait_for()
            box.scroll_into_view_if_needed()
            _shot(page, "5-demo.png")
            print(f"\nscreenshots: {ARTIFACTS}")
        except Exception:
            _shot(page, "failure.png")
            raise
        finally:
            browser.close()
