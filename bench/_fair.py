"""The timing loop every bench/ script uses, so the fairness rule is kept in one place.

Fairness rule (written at the top of each script too): the same model, data and machine for every side;
every side warmed up before timing; rounds interleaved, alternating the order, so a busy shared machine
slows every side alike; the median of at least 3 rounds; the peer in its default configuration and in its
best documented one; any difference in decoding or precision printed beside the figure.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable

MIN_ROUNDS = 3
RESULTS = Path(__file__).resolve().parent / "results"


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples this process's resident memory in a thread while the block runs (every 10 ms)."""

    def __init__(self, every_s: float = 0.01):
        self.every_s, self.peak, self._stop = every_s, 0.0, threading.Event()

    def __enter__(self):
        self.start = self.peak = rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.every_s)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def growth(self) -> float:
        """Peak minus the memory at the start of the block: the working memory the block needed."""
        return self.peak - self.start


def interleaved(configs: dict[str, Callable[[], Any]], *, rounds: int, warmups: dict[str, Callable[[], Any]],
                memory: dict[str, float] | None = None):
    """Warm every side up, then time `rounds` interleaved rounds. Returns ({name: median seconds},
    {name: output of the last round}, {name: [seconds per round]}). When `memory` is a dict it is filled with
    each side's working memory: the largest peak-RSS growth (MiB) over its rounds. All sides share one
    process, so the models every side loaded are not in it (each script prints the process's peak too)."""
    if rounds < MIN_ROUNDS:
        raise SystemExit(f"--rounds {rounds}: the fairness rule asks for the median of at least {MIN_ROUNDS} rounds")
    missing = set(configs) - set(warmups)
    if missing:
        raise SystemExit(f"no warm-up for {sorted(missing)}: every side is warmed up before timing")
    for name in configs:
        warmups[name]()
    times: dict[str, list[float]] = {k: [] for k in configs}
    outs: dict[str, Any] = {}
    for r in range(rounds):
        order = list(configs) if r % 2 == 0 else list(reversed(list(configs)))   # no side always goes first
        for name in order:
            with PeakRSS() as peak:
                t = time.perf_counter()
                outs[name] = configs[name]()
                times[name].append(time.perf_counter() - t)
            if memory is not None:
                memory[name] = max(memory.get(name, 0.0), peak.growth)
            print(f"  round {r + 1}/{rounds} {name}: {times[name][-1]:.1f} s", flush=True)
    return {k: statistics.median(v) for k, v in times.items()}, outs, times


def process_peak_mb() -> float:
    """The process's peak resident memory so far (ru_maxrss), in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def record(script: str, rows: list[dict]) -> Path:
    """Write one script's headline comparisons to bench/results/<script>.json for `bench/table.py`.

    Each row: task, appkit (the configuration), peer, appkit_s, peer_s, quality (text: appkit's vs the peer's),
    memory (text), and notes (decoding / precision differences). The ratio is peer_s / appkit_s (none where the peer is
    a stated bound, not a timed run)."""
    import torch

    RESULTS.mkdir(exist_ok=True)
    for r in rows:
        r["ratio"] = round(r["peer_s"] / r["appkit_s"], 2) if r.get("peer_s") else None
    from appkit.runtime import bf16_native

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    # the same model name covers CPUs with and without native bf16 (appkit's biggest CPU lever): say which
    simd = f"{torch.backends.cpu.get_cpu_capability()}, {'native' if bf16_native('cpu') else 'no native'} bf16"
    out = {"script": script, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{cpu} ({simd}), {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
                      f"Python {platform.python_version()}",
           "load_average_1min_at_end": round(os.getloadavg()[0], 1), "process_peak_mb": round(process_peak_mb()),
           "rows": rows}
    path = RESULTS / f"{script}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"results -> {path}")
    return path
