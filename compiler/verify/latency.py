"""Latency: measured at the end of every compile, never taken from the cache, under the machine-wide
timing lock (verify/timing.py), so that figures from one sweep were all taken alone and now."""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
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


def latency_feeds(io: Any, x_test: Mapping[str, np.ndarray] | None, batches: list[int], seed: int) -> dict[int, dict]:
    """Per batch size, inputs at the opt shapes: real samples (repeated to fill the batch) where they fit."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for b in batches:
        shapes = io.shapes(0, "opt", batch=b)
        real = x_test is not None and all(tuple(v.shape[1:]) == tuple(shapes[k][1:]) for k, v in x_test.items())
        if real:
            reps = -(-b // len(next(iter(x_test.values()))))
            feeds[b] = {k: np.ascontiguousarray(np.concatenate([v] * reps)[:b]) for k, v in x_test.items()}
        else:
            feeds[b] = io.random_feed(rng, shapes)
    return feeds


def measure_now(cfg: Any, artifacts: Mapping[str, Path], backend: str) -> tuple[dict, dict]:
    """(latency of the reference model and the engine, the conditions it was measured under), timed now,
    alone on this machine. `artifacts` maps stage names to the files the compile placed in its run dir."""
    from compiler.iospec import IOSpec
    from compiler.stages.verify import samples
    from compiler.verify.runners import CallableRunner, engine_runner, framework_predictor, onnx_runner
    from compiler.verify.timing import timing

    io, v = IOSpec.from_cfg(cfg), cfg.verify.latency
    x_test, _ = samples(cfg, io)
    if cfg.framework.value == "onnx":
        reference = onnx_runner("model.onnx", artifacts["export"], cfg.engine)
    else:
        reference = CallableRunner(cfg.framework.value, framework_predictor(cfg, io, artifacts["train"]), io)
    feeds = latency_feeds(io, x_test, io.latency_batches(v.batch_sizes), cfg.seed)
    result = {}
    with timing():
        started = datetime.now(timezone.utc)
        for key, runner in (("framework", reference), ("engine", engine_runner(backend, artifacts["build"], cfg.engine))):
            with runner:
                result[key] = measure(runner, feeds, v.iterations, v.warmup, v.max_seconds)
    conditions = {"measured_at": started.isoformat(timespec="seconds"), "host": platform.node(),
                  "cpus": os.cpu_count(), "backend": backend, "alone": True,
                  "batches": [f"b{b}" for b in feeds]}
    return result, conditions
