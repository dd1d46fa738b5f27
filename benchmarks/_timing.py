"""The one timing loop the benchmarks share: warm-up, then wall-clock milliseconds per session.run."""

from __future__ import annotations

import time

import onnxruntime as ort


def session_run_ms(session: ort.InferenceSession, feed: dict, iterations: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return times
