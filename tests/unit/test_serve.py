"""`appkit serve` on tiny random models: a real uvicorn server on 127.0.0.1 in a subprocess for text
(batching, limits, errors, queue, graceful shutdown), FastAPI's in-process TestClient for images."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import appkit

from ..conftest import make_colour_images, make_tiny_bert_folder, make_tiny_lite_folder

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m appkit.cli serve ...` on a free loopback port, stopped with SIGTERM."""

    def __init__(self, model: Path, *args: str, cwd: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        self.log = open(cwd / f"server-{self.port}.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "appkit.cli", "serve", str(model), "--port", str(self.port),
                                      *args], cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 900   # a busy shared machine can take minutes to import torch
        while time.time() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise AssertionError("the server did not start:\n" + self.output())

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> bool:
        """SIGTERM; True when the server shut down by itself (uvicorn re-raises the signal once it has)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        out = self.output()
        self.log.close()
        return code in (0, -signal.SIGTERM) and "Application shutdown complete" in out

    def post(self, body, **kw) -> httpx.Response:
        return httpx.post(self.url + "/predict", json=body, timeout=60, **kw)


@pytest.fixture(scope="module")
def text_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp / "bert"), labels=["negative", "positive"])
    model = clf.save(tmp / "model")
    server = Server(model, "--max-wait-ms", "50", "--max-request-mb", "0.01", "--max-items", "20", cwd=tmp)
    yield server, clf
    assert server.stop()


def test_predict_health_model_card_and_openapi(text_server):
    server, clf = text_server
    texts = ["good great product", "awful drug"]
    r = server.post({"inputs": texts})
    assert r.status_code == 200
    got = r.json()["predictions"]
    want = clf.predict(texts)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert got[0]["score"] == pytest.approx(want[0]["score"], abs=1e-4)
    assert server.post({"inputs": "one text", "options": {"top_k": 1}}).json()["predictions"][0].keys() == \
        {"label", "score", "scores"}

    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["stats"]["model_calls"] >= 2
    card = httpx.get(server.url + "/model").json()
    assert card["task"] == "text-classification" and card["labels"] == ["negative", "positive"]
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "/predict" in schema["paths"] and "application/json" in \
        schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert httpx.get(server.url + "/docs").status_code == 200


def test_concurrent_requests_share_model_calls(text_server):
    server, _ = text_server
    before = httpx.get(server.url + "/health").json()["stats"]
    texts = [f"good product number {i}" for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda t: server.post({"inputs": [t]}), texts))
    assert [r.status_code for r in responses] == [200] * 16
    after = httpx.get(server.url + "/health").json()["stats"]
    calls = after["model_calls"] - before["model_calls"]
    assert after["requests"] - before["requests"] == 16
    assert calls < 16 and after["largest_batch"] > 1, after    # batched: fewer model calls than requests


def test_bad_requests_get_4xx_with_the_message_and_spare_their_neighbours(text_server):
    server, _ = text_server
    with ThreadPoolExecutor(4) as pool:     # the bad one lands in a batch with good ones
        futures = [pool.submit(server.post, {"inputs": x}) for x in (["good"], ["fine", " "], ["bad"], ["nice"])]
        rs = [f.result() for f in futures]
    assert [r.status_code for r in rs] == [200, 422, 200, 200]
    assert rs[1].json()["error"].startswith("Input 1 is empty text")   # its position in its own request

    cases = [
        (server.post({"inputs": [3]}), 422, "Input 0 is a int"),
        (server.post({"inputs": ["x"], "options": {"top_kk": 1}}), 400, "Did you mean 'top_k'?"),
        (server.post({"text": "x"}), 400, 'needs an "inputs" key'),
        (server.post({"inputs": []}), 422, "empty"),
        (server.post({"inputs": ["a"] * 21}), 413, "at most 20"),
        (server.post({"inputs": ["word " * 3000]}), 413, "larger than the limit"),
        (httpx.post(server.url + "/predict", content=b'{"inputs": ', headers={"content-type": "application/json"}),
         400, "not valid JSON"),
        (httpx.post(server.url + "/predict", content=b"hello", headers={"content-type": "text/plain"}),
         415, "Unsupported content type"),
    ]
    for r, status, text in cases:
        assert r.status_code == status and text in r.json()["error"], (r.status_code, r.text)
    assert server.post({"inputs": ["still fine"]}).status_code == 200


def test_full_queue_503_and_graceful_shutdown_finishes_requests(tmp_path):
    clf = appkit.load("text-classification", make_tiny_bert_folder(tmp_path / "bert"), labels=["a", "b"])
    # each request waits 1.5 s for company: two fill the queue, a third is turned away
    server = Server(clf.save(tmp_path / "m"), "--max-queue", "2", "--max-wait-ms", "1500", cwd=tmp_path)
    with ThreadPoolExecutor(3) as pool:
        first = [pool.submit(server.post, {"inputs": [f"text {i}"]}) for i in range(2)]
        time.sleep(0.5)
        third = server.post({"inputs": ["one too many"]})
        assert third.status_code == 503 and "busy" in third.json()["error"] and third.headers["retry-after"] == "1"
        assert [f.result().status_code for f in first] == [200, 200]

    results = []
    waiting = threading.Thread(target=lambda: results.append(server.post({"inputs": ["in flight"]})))
    waiting.start()
    time.sleep(0.5)                      # the request now waits in the batcher
    clean = server.stop()                # SIGTERM: stop taking requests, finish this one, exit
    waiting.join(timeout=30)
    assert clean and results and results[0].status_code == 200
    assert results[0].json()["predictions"][0]["label"] in ("a", "b")


def test_images_by_upload_and_base64(tmp_path):
    from fastapi.testclient import TestClient

    from appkit.serve import ServeConfig, create_app

    clf = appkit.load("image-classification", make_tiny_lite_folder(tmp_path / "lite"))
    paths = list(make_colour_images(tmp_path / "img", n=3)["image"])
    want = [r["label"] for r in clf.predict(paths)]
    with TestClient(create_app(clf, ServeConfig(max_wait_ms=20))) as client:
        files = [("file", (Path(p).name, Path(p).read_bytes(), "image/jpeg")) for p in paths]
        up = client.post("/predict", files=files, data={"options": json.dumps({"top_k": 1})})
        assert up.status_code == 200 and [r["label"] for r in up.json()["predictions"]] == want
        b64 = [base64.b64encode(Path(p).read_bytes()).decode() for p in paths]
        js = client.post("/predict", json={"inputs": [b64[0], {"base64": b64[1]}, "data:image/jpeg;base64," + b64[2]]})
        assert [r["label"] for r in js.json()["predictions"]] == want

        not_image = client.post("/predict", files=[("file", ("x.jpg", b"this is text", "image/jpeg"))])
        assert not_image.status_code == 422 and "not an image" in not_image.json()["error"]
        path = client.post("/predict", json={"inputs": [paths[0]]})      # a server path is never opened
        assert path.status_code == 422 and "not valid base64" in path.json()["error"]
        assert "multipart/form-data" in client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
