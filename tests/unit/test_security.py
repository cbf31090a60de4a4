"""Nothing leaves the machine, nothing runs from a model folder."""
from __future__ import annotations

import socket
import urllib.request

import pytest

pytest_plugins = ["pytester"]


# ---------------------------------------------------------------------- network
def test_outbound_connections_are_refused_and_fail_the_test(_no_network):
    """The autouse guard in conftest: a connection beyond loopback raises and is recorded (failing the test)."""
    with pytest.raises(ConnectionRefusedError, match="outbound network is blocked"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    with pytest.raises(OSError):
        urllib.request.urlopen("http://example.com", timeout=1)
    s = socket.socket()
    try:
        with pytest.raises(ConnectionRefusedError):
            s.connect_ex(("8.8.8.8", 53))
    finally:
        s.close()
    assert len(_no_network) >= 3 and any("example.com" in a for a in _no_network)
    _no_network.clear()     # recorded on purpose here: do not fail this test at teardown


def test_loopback_stays_open():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        with socket.create_connection(("localhost", port), timeout=2):
            pass
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        assert socket.getaddrinfo("localhost", port)
    finally:
        server.close()


def test_the_guard_fails_a_test_that_reaches_out_even_when_the_error_is_swallowed(pytester):
    """A library that catches the refused connection and carries on (as hub clients do) still fails the test."""
    from pathlib import Path

    pytester.makeconftest((Path(__file__).parents[1] / "conftest.py").read_text())
    pytester.makepyfile(test_swallow="""
        import socket

        def test_reaches_out():
            try:
                socket.create_connection(("huggingface.co", 443), timeout=1)
            except OSError:
                pass   # a quiet fallback to the cache
    """)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*tried to reach the network*huggingface.co*"])


# ---------------------------------------------------------------------- model folders
MARKER_NAME = "payload-ran"


def _tiny_bert(tmp_path):
    from ..conftest import make_tiny_bert_folder

    return make_tiny_bert_folder(tmp_path / "bert")


def _pickle_only_folder(tmp_path, *, payload: bool):
    """The tiny BERT with its weights as pytorch_model.bin; with payload=True the pickle also writes a file."""
    import os
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    folder = Path(_tiny_bert(tmp_path))
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    marker = tmp_path / MARKER_NAME
    if payload:
        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        state["extra"] = Payload()
    torch.save(state, folder / "pytorch_model.bin")
    return folder, marker


@pytest.mark.parametrize("task", ["text-classification", "image-classification", "speech-recognition", "translation"])
def test_pickle_weights_are_refused_and_their_payload_never_runs(tmp_path, task):
    import appkit
    from appkit.errors import ModelError

    folder, marker = _pickle_only_folder(tmp_path, payload=True)
    with pytest.raises(ModelError, match=r"only as pickle files \(pytorch_model.bin\).*How to fix: .*weights_only=True"):
        appkit.load(task, folder)
    assert not marker.exists()


def test_the_conversion_the_message_gives_works_and_refuses_a_payload(tmp_path):
    import re
    import subprocess
    import sys

    import appkit
    from appkit.errors import ModelError

    folder, _ = _pickle_only_folder(tmp_path / "clean", payload=False)
    with pytest.raises(ModelError) as info:
        appkit.load("text-classification", folder)
    command = re.search(r'python -c "(.*?)"', str(info.value)).group(1)
    subprocess.run([sys.executable, "-c", command], check=True, timeout=120)
    clf = appkit.load("text-classification", folder, labels=["negative", "positive"])
    assert clf.predict("good product")["label"] in ("negative", "positive")

    evil, marker = _pickle_only_folder(tmp_path / "evil", payload=True)
    with pytest.raises(ModelError) as info:
        appkit.load("text-classification", evil)
    command = re.search(r'python -c "(.*?)"', str(info.value)).group(1)
    done = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Weights only load failed" in done.stderr
    assert not marker.exists()


def _remote_code_folder(tmp_path, *, model_type: str):
    import json
    from pathlib import Path

    folder = Path(_tiny_bert(tmp_path))
    marker = tmp_path / "remote-code-ran"
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = model_type
    cfg["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel",
                       "AutoModelForSequenceClassification": "custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import BertConfig as CustomConfig, BertForSequenceClassification as CustomModel\n")
    return folder, marker


def test_a_model_that_needs_its_own_code_is_refused_and_the_code_never_runs(tmp_path):
    import appkit
    from appkit.errors import ModelError

    folder, marker = _remote_code_folder(tmp_path, model_type="my-custom-bert")
    with pytest.raises(ModelError, match="needs its own Python code.*never runs code from a model folder"):
        appkit.load("text-classification", folder)
    assert not marker.exists()


def test_a_known_architecture_with_an_auto_map_loads_with_transformers_own_code(tmp_path):
    import appkit

    folder, marker = _remote_code_folder(tmp_path, model_type="bert")
    clf = appkit.load("text-classification", folder, labels=["negative", "positive"])
    assert type(clf.model).__module__.startswith("transformers.models.bert")
    assert clf.predict("good product")["label"] in ("negative", "positive")
    assert not marker.exists()


def test_transformers_never_prompts_to_run_model_code_while_appkit_loads():
    """In a notebook transformers would ask "run the custom code? [y/N]"; appkit's loading turns the prompt off."""
    from transformers import dynamic_module_utils

    from appkit.runtime import quiet_transformers

    with quiet_transformers():
        assert dynamic_module_utils.TIME_OUT_REMOTE_CODE == 0
        with pytest.raises(ValueError, match="trust_remote_code"):
            dynamic_module_utils.resolve_trust_remote_code(None, "someone/model", has_local_code=False,
                                                           has_remote_code=True)


# ---------------------------------------------------------------------- saved folders
def test_a_half_written_folder_is_refused_and_says_so(tmp_path):
    import appkit
    from appkit.errors import ModelError
    from appkit.folders import PARTIAL_MARKER

    clf = appkit.load("text-classification", _tiny_bert(tmp_path), labels=["negative", "positive"])

    def dies_half_way(path, **_):
        clf.model.save_pretrained(path)
        raise KeyboardInterrupt           # the kernel stopped while the tokenizer was still to be written

    clf._write_folder, real = dies_half_way, clf._write_folder
    with pytest.raises(KeyboardInterrupt):
        clf.save(tmp_path / "saved")
    assert not (tmp_path / "saved").exists() and not list(tmp_path.glob(".saved.partial-*"))
    clf._write_folder = real
    # what a SIGKILL leaves behind: the temporary folder with its marker
    partial = tmp_path / ".saved.partial-dead"
    partial.mkdir()
    clf.model.save_pretrained(partial)
    (partial / PARTIAL_MARKER).write_text("")
    with pytest.raises(ModelError, match="incomplete: it was still being written"):
        appkit.load("text-classification", partial)


def test_saving_replaces_an_earlier_save_and_refuses_files_and_foreign_folders(tmp_path):
    import appkit
    from appkit.errors import ModelError

    clf = appkit.load("text-classification", _tiny_bert(tmp_path), labels=["negative", "positive"])
    first = clf.save(tmp_path / "m")
    (first / "stale.txt").write_text("from the first save")
    clf.save(tmp_path / "m")                                      # an earlier save is replaced whole
    assert not (tmp_path / "m" / "stale.txt").exists()
    assert appkit.load("text-classification", tmp_path / "m").labels == ["negative", "positive"]
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="it is a file"):
        clf.save(tmp_path / "notes.txt")
    with pytest.raises(ModelError, match="a part of that path is a file"):
        clf.save(tmp_path / "notes.txt" / "model")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "analysis.ipynb").write_text("{}")
    with pytest.raises(ModelError, match="already holds other files"):
        clf.save(tmp_path / "project")
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "project" / "analysis.ipynb").exists()


def test_a_damaged_appkit_json_is_named(tmp_path):
    import appkit
    from appkit.errors import ModelError

    clf = appkit.load("text-classification", _tiny_bert(tmp_path), labels=["negative", "positive"])
    folder = clf.save(tmp_path / "m")
    (folder / "appkit.json").write_text('{"task": "text-classif')
    with pytest.raises(ModelError, match=r"appkit.json' is damaged"):
        appkit.load("text-classification", folder)
