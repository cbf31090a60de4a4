"""The suite's own guards (issue 16): skips fail in CI, the notebook kernel is the venv under test, caches are private."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_pytest(tmp_path, env_extra: dict) -> subprocess.CompletedProcess:
    (tmp_path / "test_needs_setup.py").write_text(
        "import pytest\n"
        "def test_needs_flite():\n    pytest.skip('apt-get install -y flite')\n"
        "def test_runs():\n    assert True\n")
    (tmp_path / "test_whole_file.py").write_text(
        "import pytest\npytest.skip('pip install --no-deps some-model', allow_module_level=True)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "APPKIT_NO_SKIP")}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    # our conftest as a plugin, on a folder of its own: its hooks decide, not this run's state
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_skips_are_listed_locally_and_fail_in_ci(tmp_path):
    local = _run_pytest(tmp_path, {})
    assert local.returncode == 0, local.stdout
    assert "SKIPPED" in local.stdout and "apt-get install -y flite" in local.stdout
    for env in ({"CI": "true"}, {"APPKIT_NO_SKIP": "1"}):
        ci = _run_pytest(tmp_path, env)
        assert ci.returncode == 1, ci.stdout
        assert "1 failed, 1 passed, 1 error" in ci.stdout, ci.stdout            # the rest still ran
        assert "skips fail when CI" in ci.stdout and "apt-get install -y flite" in ci.stdout
        assert "pip install --no-deps some-model" in ci.stdout


def test_silero_fallback_fails_the_run_in_ci(tmp_path):
    (tmp_path / "test_vad.py").write_text("from appkit import media\n"
                                          "def test_long_recording():\n    media._warn_no_vad()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "APPKIT_NO_SKIP")}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", str(tmp_path)]
    local = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    ci = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT), "CI": "true"},
                        cwd=tmp_path)
    assert local.returncode == 0 and "VadFallbackWarning" in local.stdout, local.stdout     # said, not hidden
    assert ci.returncode == 1 and "silero-vad is not installed" in ci.stdout, ci.stdout


def test_every_run_prints_the_skip_summary():
    import re

    opts = re.search(r'^addopts\s*=\s*"([^"]*)"', (ROOT / "pyproject.toml").read_text(), re.M)   # no tomllib on 3.10
    assert opts and "-rs" in opts.group(1).split()


def test_tests_use_a_private_appkit_cache():
    from appkit.backbones.whisper_ct2 import cache_dir

    assert not str(cache_dir()).startswith(str(Path.home() / ".cache"))


def test_the_notebook_kernel_is_this_interpreter(venv_kernel):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import start_new_kernel

    assert KernelSpecManager().get_kernel_spec(venv_kernel).argv[0] == sys.executable
    km, kc = start_new_kernel(kernel_name=venv_kernel)
    try:
        msg_id = kc.execute("import sys; print(sys.executable)")
        out = []
        while True:
            msg = kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert "".join(out).strip() == sys.executable
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
