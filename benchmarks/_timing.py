"""The one timing loop the benchmarks share: warm-up, then wall-clock milliseconds per session.run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import onnxruntime as ort


def machine_line() -> str:
    """onnxruntime's version, the CPU model and count: the first line of every benchmark table."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"onnxruntime {ort.__version__} on {cpu}, {os.cpu_count()} CPUs\n"


def session_run_ms(session: ort.InferenceSession, feed: dict, iterations: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return times
