"""A real JupyterLab on loopback and Debian's headless Chromium driven by playwright, for tests/browser/test_lab*.py.

Recipe and traps: ../shared/BROWSER-TESTS.md (never `playwright install`: Debian's chromium is used). Screenshots
are kept in tests/artifacts/browser/ (git-ignored). Every Jupyter folder (config, data, runtime, settings,
workspaces) is private to the test, so a user's kernelspecs or lab settings cannot change what runs."""
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
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
STEP_TIMEOUT_MS = 90_000     # one wait; a whole test stays well under 3 minutes on a quiet 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    base: str
    token: str
    work: Path
    log: Path

    def url(self, notebook: str) -> str:
        return f"{self.base}/lab/tree/{notebook}?token={self.token}"

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.base}/api/{path}?token={self.token}", method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab in its own process group; the whole group (server and kernels) is stopped afterwards."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make sysdeps)")
    tmp = tmp_path_factory.mktemp("lab")
    work, conf = tmp / "work", tmp / "jupyter"
    work.mkdir()
    settings = conf / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    # every cell in the DOM (no windowing), so what the test reads is the whole notebook, not what is scrolled into view
    notebook_settings = conf / "lab-settings" / "@jupyterlab" / "notebook-extension"
    notebook_settings.mkdir(parents=True)
    (notebook_settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(conf / "config"), "JUPYTER_DATA_DIR": str(conf / "data"),
           "JUPYTER_RUNTIME_DIR": str(conf / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(conf / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(conf / "ws"), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("JUPYTER_PATH", None)
    # the server's own interpreter is the kernel's (ipykernel's built-in python3 spec): the venv under test
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
           f"--ServerApp.root_dir={work}", f"--IdentityProvider.token={token}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
           "--expose-app-in-browser", "--allow-root"]
    log_path = tmp / "lab.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    lab = Lab(f"http://127.0.0.1:{port}", token, work, log_path)
    try:
        deadline = time.time() + 120
        while True:
            try:
                lab.api("status")
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("JupyterLab did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(0.5)
        yield lab
    finally:
        # kernels run in their own sessions: ask the server to shut them down, then end the server's group
        try:
            lab.api("shutdown", method="POST")
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


@pytest.fixture
def page(lab, request):
    """A fresh Chromium page; on failure a screenshot (failure-<test>.png) and the lab log's tail are kept."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.set_default_timeout(STEP_TIMEOUT_MS)
        try:
            yield pg
        finally:
            failed = getattr(request.node, "rep_call", None)
            if failed is not None and failed.failed:
                shot(pg, f"failure-{request.node.name}.png")
                print("lab log tail:\n" + lab.log.read_text()[-3000:])
            browser.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep


def step(what: str) -> None:
    print(f"[browser test {time.strftime('%H:%M:%S')}] {what}", flush=True)


def shot(page, name: str, *, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


def write_notebook(path: Path, cells: list[str]) -> None:
    nb = {"cells": [{"cell_type": "code", "id": f"cell-{i}", "metadata": {}, "source": src, "outputs": [],
                     "execution_count": None} for i, src in enumerate(cells)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


KERNEL_IDLE = ("() => window.jupyterapp && jupyterapp.shell.currentWidget && "
               "jupyterapp.shell.currentWidget.sessionContext?.session?.kernel?.status === 'idle'")


def open_and_run_all(page, lab: Lab, notebook: str) -> None:
    """Open a notebook, wait for its kernel to be really idle (Run All before that is silently lost), Run All."""
    step(f"open {notebook}")
    page.goto(lab.url(notebook), wait_until="commit")
    page.wait_for_function(KERNEL_IDLE, polling=250)
    step("kernel idle: run all cells")
    # not awaited: the command's promise settles only when the last cell has run, and page.evaluate has no timeout
    page.evaluate("() => { jupyterapp.commands.execute('notebook:run-all-cells'); }")


def save_and_reopen_without_kernel(page, lab: Lab, notebook: str) -> None:
    """Save, end the kernel (what a reopened notebook has: no widget models), and open the notebook afresh."""
    page.evaluate("() => { jupyterapp.commands.execute('docmanager:save'); }")
    page.wait_for_function("() => !jupyterapp.shell.currentWidget.context.model.dirty", polling=250)
    for session in lab.api("sessions"):
        lab.api(f"sessions/{session['id']}", method="DELETE")
    assert not lab.api("kernels"), "a kernel survived the session shutdown"
    step("saved, kernel shut down: reopen")
    page.goto(lab.url(notebook), wait_until="commit")
    page.wait_for_function("() => window.jupyterapp && jupyterapp.shell.currentWidget?.context?.isReady", polling=250)
