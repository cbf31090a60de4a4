"""Load test of `appkit serve`: the packaged MiniLM text classifier on loopback, with and without batching.

Starts `appkit serve` twice on 127.0.0.1 (a free port each): once one request per model call
(--max-batch 1: the peer), once with dynamic micro-batching (the defaults). Each time N client
threads (default 16) send a fixed number of requests (one real drug-review text each, 1-8
sentences) over keep-alive connections, then stop. Prints throughput, p50 / p99 latency, the
error count and the mean batch the server formed, and the ratio (target: >= 2x at 16 clients,
0 errors). Exit status 1 when a request failed.

    python bench/serve_load.py [--clients 16] [--requests-per-client 25]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str, port: int, extra: list[str], log) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "appkit.cli", "serve", model, "--port", str(port), *extra],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 900   # loading torch and the model: seconds on a quiet machine, minutes on a busy one
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {log.name}")
        try:
            get(port, "/health")
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not start within 900 s; see {log.name}")


def get(port: int, path: str) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    return json.loads(c.getresponse().read())


def client(port: int, texts: list[str], latencies: list, errors: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for t in texts:
        body = json.dumps({"inputs": [t]})
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/predict", body=body, headers={"content-type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200 or "predictions" not in json.loads(data):
                errors.append(f"{r.status}: {data[:200]!r}")
                continue
        except (OSError, http.client.HTTPException) as exc:
            errors.append(repr(exc))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            continue
        latencies.append(time.perf_counter() - t0)
    conn.close()


def load(port: int, texts: list[str], clients: int, per_client: int) -> dict:
    for t in texts[:8]:   # warm-up: first calls pay for lazy initialisation
        client(port, [t], [], [])
    before = get(port, "/health")["stats"]
    latencies, errors, threads = [], [], []
    t0 = time.perf_counter()
    for k in range(clients):
        mine = [texts[(k * per_client + i) % len(texts)] for i in range(per_client)]
        th = threading.Thread(target=client, args=(port, mine, latencies, errors))
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    seconds = time.perf_counter() - t0
    after = get(port, "/health")["stats"]
    calls = after["model_calls"] - before["model_calls"]
    lat = sorted(latencies)
    return {"requests": clients * per_client, "errors": len(errors), "first_error": errors[0] if errors else None,
            "seconds": seconds, "throughput": len(lat) / seconds,
            "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
            "mean_batch": (after["items"] - before["items"]) / calls if calls else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests-per-client", type=int, default=25)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    args = ap.parse_args()
    import appkit
    from text_predict import review_texts   # bench/text_predict.py: real review texts, 1-8 sentences

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    clf = appkit.load("text-classification", labels=["negative", "neutral", "positive"])   # packaged MiniLM, zero-shot
    model = str(clf.save(tmp / "model"))
    texts = review_texts(args.clients * args.requests_per_client, seed=0)
    modes = {"one request per model call (--max-batch 1)": ["--max-batch", "1", "--max-wait-ms", "0"],
             f"dynamic batching (--max-batch 32, --max-wait-ms {args.max_wait_ms:g})":
                 ["--max-batch", "32", "--max-wait-ms", str(args.max_wait_ms)]}
    rows = {}
    for name, extra in modes.items():
        port = free_port()
        with open(tmp / f"server-{port}.log", "w") as log:
            proc = start(model, port, extra, log)
            try:
                rows[name] = load(port, texts, args.clients, args.requests_per_client)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    print(f"appkit serve, packaged MiniLM-L6 (zero-shot, 3 labels), {args.clients} concurrent clients, "
          f"{args.clients * args.requests_per_client} requests of one real review each, loopback")
    print(f"{'mode':58s} {'req/s':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'errors':>6s} {'mean batch':>10s}")
    for name, r in rows.items():
        print(f"{name:58s} {r['throughput']:7.1f} {r['p50_ms']:8.0f} {r['p99_ms']:8.0f} {r['errors']:6d} {r['mean_batch']:10.1f}")
        if r["first_error"]:
            print(f"   first error: {r['first_error']}")
    base, batched = rows.values()
    ratio = batched["throughput"] / base["throughput"]
    print(f"batching / one-at-a-time throughput: {ratio:.2f}x (target >= 2x), errors: "
          f"{base['errors'] + batched['errors']} (target 0)")
    return 1 if base["errors"] + batched["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
