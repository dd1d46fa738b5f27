"""Latency of a runner at given batch sizes: warm-up, then p50/p99 over timed iterations."""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np


def measure(runner: Any, feeds: Mapping[int, dict], iterations: int, warmup: int, max_seconds: float = float("inf"),
            min_iterations: int = 10) -> dict[str, dict]:
    """Wall-clock milliseconds per inference call, per batch size: `iterations` calls, or fewer once
    `max_seconds` is spent."""
    result = {}
    for batch, feed in feeds.items():
        for _ in range(warmup):
            runner.infer(feed, check_inputs=False)
        times: list[float] = []
        budget_ms = max_seconds * 1e3
        while len(times) < iterations and (len(times) < min_iterations or sum(times) < budget_ms):
            start = time.perf_counter()
            runner.infer(feed, check_inputs=False)
            times.append((time.perf_counter() - start) * 1e3)
        result[f"b{batch}"] = {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
                               "mean": float(np.mean(times)), "iterations": len(times)}
    return result
