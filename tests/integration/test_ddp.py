"""fine_tune under torchrun: 2 processes on CPU (gloo) train the same model as 1 process.

The same script runs alone with batch 24 and under `torchrun --nproc_per_node=2` with batch 12 per
process: the same 24 examples per step, so full-batch training must end at the same weights (up to
float summation order). Dropout is off and the seed fixed, so any difference is DDP's doing.
Also checks what the ranks write: one saved model, one feature cache, checkpoints.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import appkit

from ..conftest import make_tiny_bert_folder

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["good great product", "awful drug", "it is fine", "the worst drug", "love it excellent", "sad it is bad"]

SCRIPT = '''
import os, sys
import torch
import appkit
from tests.conftest import text_train_frame

bert, out, batch_size, strategy = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)    # the new head's initial weights
clf = appkit.load("text-classification", bert, labels=["negative", "positive"], device="cpu", precision="float32")
for m in clf.model.modules():
    if isinstance(m, torch.nn.Dropout):
        m.p = 0.0
run = clf.fine_tune(text_train_frame(24), strategy=strategy, epochs=4, batch_size=batch_size, class_weights=None,
                    learning_rate=1e-2 if strategy == "head" else 1e-3, output_dir=out + "-runs", progress=False)
clf.save(out)
print("RANK", os.environ.get("RANK", "-"), "WORLD", torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
      "LOSS", run.history.train_loss.dropna().iloc[-1], flush=True)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(tmp: Path, bert: str, name: str, strategy: str, nproc: int) -> subprocess.CompletedProcess:
    script = tmp / "train.py"
    script.write_text(SCRIPT)
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                f"--master_addr=127.0.0.1", f"--master_port={free_port()}"] if nproc > 1 else [sys.executable]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*launcher, str(script), bert, str(tmp / name), str(24 // nproc), strategy], cwd=tmp, env=env,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.parametrize("strategy", ["head", "full"])
def test_two_processes_train_what_one_does(strategy, tmp_path):
    bert = make_tiny_bert_folder(tmp_path / "bert", init=0.2)
    one = train(tmp_path, bert, "one", strategy, 1)
    two = train(tmp_path, bert, "two", strategy, 2)
    ranks = sorted(line.split()[1] for line in two.stdout.splitlines() if line.startswith("RANK"))
    assert ranks == ["0", "1"] and all(" WORLD 2 " in line for line in two.stdout.splitlines() if line.startswith("RANK"))

    a = appkit.load("text-classification", str(tmp_path / "one"), precision="float32").predict(TEXTS)
    b = appkit.load("text-classification", str(tmp_path / "two"), precision="float32").predict(TEXTS)
    diff = max(abs(x["scores"][k] - y["scores"][k]) for x, y in zip(a, b) for k in x["scores"])
    print(f"{strategy}: 1 vs 2 processes, largest probability difference {diff:.2e}")
    assert [x["label"] for x in a] == [y["label"] for y in b] and diff < 1e-4
    meta = json.loads((tmp_path / "two" / "appkit.json").read_text())
    assert meta["training"]["strategy"] == strategy
    runs = tmp_path / "two-runs"
    assert sorted(p.name for p in runs.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert not list(runs.glob("*.tmp*"))            # no half-written feature cache left by a rank
    assert len(list(runs.glob("features-*"))) == (1 if strategy == "head" else 0)


def test_predict_splits_the_input_across_two_processes(tmp_path):
    import pandas as pd

    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "bert"), labels=["negative", "positive"])
    folder = clf.save(tmp_path / "m")
    pd.DataFrame({"id": range(18), "text": [f"{t} {i}" for i, t in enumerate(TEXTS * 3)]}).to_csv(
        tmp_path / "in.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = ["-m", "appkit.cli", "predict", str(folder), "in.csv"]
    one = subprocess.run([sys.executable, *args, "--output", "one.csv"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                          f"--master_port={free_port()}", *args, "--output", "two.csv"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert one.returncode == 0 and two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    a, b = pd.read_csv(tmp_path / "one.csv"), pd.read_csv(tmp_path / "two.csv")
    assert list(b.id) == list(range(18)) and list(a.pred_label) == list(b.pred_label)
    assert (a.pred_score - b.pred_score).abs().max() < 1e-4
    assert not list(tmp_path.glob("two.csv.shard-*"))      # shards are gathered, then removed
