"""The timing loop every bench/ script uses, so the fairness rule is kept in one place.

Fairness rule (written at the top of each script too): the same model, data and machine for every side;
every side warmed up before timing; rounds interleaved, alternating the order, so a busy shared machine
slows every side alike; the median of at least 3 rounds; the peer in its default configuration and in its
best documented one; any difference in decoding or precision printed beside the figure.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

MIN_ROUNDS = 3


def interleaved(configs: dict[str, Callable[[], Any]], *, rounds: int, warmups: dict[str, Callable[[], Any]]):
    """Warm every side up, then time `rounds` interleaved rounds. Returns ({name: median seconds},
    {name: output of the last round}, {name: [seconds per round]})."""
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
            t = time.perf_counter()
            outs[name] = configs[name]()
            times[name].append(time.perf_counter() - t)
            print(f"  round {r + 1}/{rounds} {name}: {times[name][-1]:.1f} s", flush=True)
    return {k: statistics.median(v) for k, v in times.items()}, outs, times
