"""A killed fine-tune resumes to the same result; two at once do not overwrite each other.

Each run is a real process (tiny random BERT, strategy "head", 4 epochs, a checkpoint per epoch,
the default runs/ folder). One is killed with SIGKILL, the way a kernel dies when the laptop runs
out of memory, right after its first checkpoint; `resume=True` then continues it and must end with
the metrics of an uninterrupted run with the same seed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys, time
from tests.conftest import text_train_frame
import appkit

folder, mode = sys.argv[1], sys.argv[2]
clf = appkit.load("text-classification", folder)
if mode == "slow":          # time for the parent to kill it between checkpoints
    real = clf._step_loss
    def slow(*a, **k):
        time.sleep(0.25)
        return real(*a, **k)
    clf._step_loss = slow
train = text_train_frame(48)
evaluation = text_train_frame(12).assign(text=lambda d: d.text + " indeed")
run = clf.fine_tune(train, eval_data=evaluation, strategy="head", epochs=4, batch_size=8, seed=3,
                    learning_rate=2e-2, progress=False, resume=(mode == "resume"))
print("RESULT " + json.dumps({"metrics": run.metrics, "dir": str(run.output_dir), "resumed_from": run.resumed_from_step,
                              "last_step": int(run.history["step"].max()),
                              "predictions": clf.predict(["good product", "awful drug", "it is fine"])}))
"""


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def _start(folder: str, mode: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, folder, mode], cwd=cwd, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _result(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT ")) | {"stderr": err}


def _complete_checkpoints(cwd: Path) -> list[Path]:
    return sorted(cwd.glob("runs/*/*/checkpoint-*/trainer_state.json"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from ..conftest import make_tiny_bert_folder

    return make_tiny_bert_folder(tmp_path_factory.mktemp("m") / "bert")


def test_two_runs_at_once_get_their_own_folders_and_a_killed_run_resumes_to_the_same_result(folder, tmp_path):
    together, killed = tmp_path / "together", tmp_path / "killed"
    together.mkdir(), killed.mkdir()

    # two notebooks fine-tuning the same data at the same time, into the default runs/ folder
    first, second = _start(folder, "straight", together), _start(folder, "straight", together)
    victim = _start(folder, "slow", killed)
    # SIGKILL right after the first complete checkpoint: no Python handler runs, nothing is flushed
    deadline = time.monotonic() + 240
    while not _complete_checkpoints(killed):
        assert victim.poll() is None, "the run ended before its first checkpoint: " + victim.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    steps = sorted(int(p.parent.name.split("-")[1]) for p in _complete_checkpoints(killed))
    assert steps and steps[-1] < 24, steps

    a, b = _result(first), _result(second)
    assert a["dir"] != b["dir"] and Path(a["dir"]).parent == Path(b["dir"]).parent
    for r in (a, b):
        assert len(list((together / r["dir"]).glob("checkpoint-*/trainer_state.json"))) == 2   # each kept its own
        assert r["last_step"] == 24 and r["resumed_from"] is None
    assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-6)

    # and a checkpoint the process was still writing when it died: never trusted
    run_dir = _complete_checkpoints(killed)[-1].parents[1]
    half = run_dir / "checkpoint-23"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x00" * 100)

    resumed = _result(_start(folder, "resume", killed))
    assert Path(resumed["dir"]) == run_dir.relative_to(killed)            # found the killed run by itself
    assert resumed["resumed_from"] == steps[-1] and resumed["last_step"] == 24
    assert "checkpoint-23 was only half written" in resumed["stderr"] and not half.exists()
    assert resumed["metrics"] == pytest.approx(a["metrics"], abs=1e-6), (resumed["metrics"], a["metrics"])
    print(f"killed after step {steps[-1]} of 24 (checkpoints {steps}); resumed from {resumed['resumed_from']}; "
          f"uninterrupted {a['metrics']}; resumed {resumed['metrics']}")
    assert [r["label"] for r in resumed["predictions"]] == [r["label"] for r in a["predictions"]]
    for r, s in zip(resumed["predictions"], a["predictions"]):
        assert r["score"] == pytest.approx(s["score"], abs=1e-6)
