"""Latency: measured at the end of every compile, never taken from the cache, under the machine-wide
timing lock (machine_lock.py), so that figures from one sweep were all taken alone and now. The framework
reference's figures are the one exception: an unchanged reference on the same machine shows those of the run that
measured it, with that time (verify/reference_latency.py)."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from compiler.cache import cache_root
from compiler.frameworks import trainable
from compiler.machine_lock import timing, working
from compiler.numerics import STRICT_FP32
from compiler.verify import reference_latency
from compiler.verify.device_runners import OrtDeviceRunner, OrtGraphRunner, TorchDeviceRunner, gpu_conditions
from compiler.verify.feeds import samples

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec
    from compiler.plan import EnginePlan


QUIET_SHARE = 0.05   # other processes may use at most this share of the machine's CPU time while we time


def _busy_ticks() -> tuple[int, int]:
    """(CPU ticks every process has used so far, ticks this process has used): from /proc, where it exists."""
    try:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        mine = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        return sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0), int(mine[11]) + int(mine[12])
    except (OSError, ValueError, IndexError):
        return 0, 0


def _timed_calls(runner: Any, feed: dict, iterations: int, max_seconds: float, min_iterations: int) -> tuple[list, float]:
    """Milliseconds per call, and the share of the machine's CPU that other processes used meanwhile."""
    busy0, mine0 = _busy_ticks()
    wall0 = time.perf_counter()
    times: list[float] = []
    budget_ms = max_seconds * 1e3
    while len(times) < iterations and (len(times) < min_iterations or sum(times) < budget_ms):
        start = time.perf_counter()
        runner.infer(feed, check_inputs=False)
        times.append((time.perf_counter() - start) * 1e3)
    busy1, mine1 = _busy_ticks()
    capacity = (time.perf_counter() - wall0) * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
    others = max(0, (busy1 - busy0) - (mine1 - mine0)) / capacity if capacity else 0.0
    return times, others


@dataclass
class QuietWindows:
    """How many timing windows a figure may take to find a quiet one (other processes under QUIET_SHARE of the CPU),
    shared by every figure of one measurement. A figure that found none in all its tries shows a busy machine, not a
    passing disturbance (a CI runner, jobs outside the lock): the later figures take one window each, since waiting
    `tries` times as long for each of them would find no quieter one."""

    tries: int
    busy: bool = False

    def allowed(self) -> int:
        return 1 if self.busy else max(1, self.tries)


def measure(runner: Any, feeds: Mapping[int, dict], iterations: int, warmup: int, quiet: QuietWindows,
            max_seconds: float = float("inf"), min_iterations: int = 10, warmup_seconds: float = 0.0) -> dict[str, dict]:
    """Wall-clock milliseconds per inference call, per batch size: `iterations` calls, or fewer once
    `max_seconds` is spent."""
    result = {}
    for batch, feed in feeds.items():
        started = time.perf_counter()  # warm up by count and by time
        for i in range(max(warmup, 1_000_000) if warmup else 0):
            runner.infer(feed, check_inputs=False)
            if i + 1 >= warmup and time.perf_counter() - started >= warmup_seconds:
                break
        # other processes (a sweep job starting up outside any lock, a user's program) may still run: time again
        # until a window in which they used under QUIET_SHARE of the machine, and keep the quietest try
        tries, allowed = [], quiet.allowed()
        for _ in range(allowed):
            tries.append(_timed_calls(runner, feed, iterations, max_seconds, min_iterations))
            if tries[-1][1] <= QUIET_SHARE:
                break
            if len(tries) < allowed:
                time.sleep(0.2)
        times, others = min(tries, key=lambda t: t[1])
        quiet.busy = quiet.busy or others > QUIET_SHARE
        result[f"b{batch}"] = {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)),
                               "mean": float(np.mean(times)), "iterations": len(times), "tries": len(tries),
                               "tries_allowed": allowed, "others_cpu_share": round(others, 3)}
    return result


def latency_feeds(io: IOSpec, x_test: Mapping[str, np.ndarray] | None, batches: list[int],
                  seed: int) -> dict[int, dict]:
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


SETTLE_SECONDS = 0.05
ROUNDS = 5  # comparisons (thread counts, `best` candidates) time each contender this many times, interleaved


def thread_counts() -> list[int]:
    """The intra-op thread counts `intra_op_threads: auto` tries: powers of two up to the CPU count, and it."""
    cpus = os.cpu_count() or 1
    counts = [1 << i for i in range(cpus.bit_length()) if 1 << i < cpus]
    return counts + [cpus]


def compare(runners: Mapping[Any, Any], feeds: Mapping[Any, Mapping[int, dict]], v: Any,
            quiet: QuietWindows | None = None) -> dict[Any, dict[str, dict]]:
    """Latency of several contenders (each on its own feeds by batch size), in ROUNDS interleaved rounds, so
    that a drift of the machine (a noisy neighbour, a frequency change) hits every one alike; per batch, the
    median round."""
    quiet = quiet or QuietWindows(v.quiet_tries)
    rounds: dict[Any, list[dict]] = {name: [] for name in runners}
    with contextlib.ExitStack() as stack:
        active = {name: stack.enter_context(runner) for name, runner in runners.items()}
        for _ in range(ROUNDS):
            for name, runner in active.items():
                time.sleep(SETTLE_SECONDS)  # the last contender's worker threads spin a while after its last call
                rounds[name].append(measure(runner, feeds[name], v.iterations, v.warmup, quiet, v.max_seconds,
                                            warmup_seconds=v.warmup_seconds))
    out = {}
    for name, tries in rounds.items():
        out[name] = {}
        for batch in tries[0]:
            middle = sorted(tries, key=lambda t: t[batch]["p50"])[len(tries) // 2]
            out[name][batch] = {**middle[batch], "rounds": [round(t[batch]["p50"], 4) for t in tries]}
    return out


def _fastest_threads(plan: EnginePlan, engine: Path, feed: dict, v: Any, quiet: QuietWindows) -> tuple[int, list[dict]]:
    """Time the engine at each thread count on the largest batch; the fastest count, and the whole table."""
    counts = thread_counts()
    timed = compare({t: timing_engine_runner(plan, engine, intra_op_threads=t) for t in counts},
                    {t: {0: feed} for t in counts}, v, quiet)
    table = [{"intra_op_threads": t, "p50_ms": timed[t]["b0"]["p50"], "rounds": timed[t]["b0"]["rounds"]}
             for t in counts]
    return min(table, key=lambda row: row["p50_ms"])["intra_op_threads"], table


def _auto_threads(plan: EnginePlan) -> bool:
    return plan.backend == "onnxruntime" and plan.intra_op_threads == "auto" and not plan.gpu


def timing_engine_runner(plan: EnginePlan, engine: Path, intra_op_threads: int | None = None) -> Any:
    """The engine as latency times it: on the GPU with inputs and outputs on the device (onnxruntime's I/O
    binding), else Polygraphy's runner from numpy arrays."""
    from compiler.verify.runners import engine_runner

    if plan.gpu and plan.backend == "onnxruntime":
        from compiler.backends.onnxruntime import load_session

        runner = OrtGraphRunner if plan.cuda_graph else OrtDeviceRunner
        return runner(lambda: load_session(engine, plan, intra_op_threads=intra_op_threads), "engine")
    return engine_runner(plan, engine, intra_op_threads=intra_op_threads)


def timing_reference_runner(cfg: DictConfig, io: IOSpec, plan: EnginePlan, artifacts: Mapping[str, Path]) -> Any:
    """The reference model as latency times it, in strict fp32: the framework model (eager; on the GPU with
    device tensors when the engine runs there), or for ONNX recipes the original file."""
    from compiler.verify.runners import CallableRunner, framework_predictor, onnx_runner

    if cfg.framework.value == "onnx":
        if plan.gpu:
            from compiler.backends.onnxruntime import load_session

            return OrtDeviceRunner(lambda: load_session(artifacts["export"], plan, optimization_level="disable",
                                                        mode=STRICT_FP32), "model.onnx")
        return onnx_runner("model.onnx", artifacts["export"], plan)
    if cfg.framework.value == "torch" and plan.gpu:
        from compiler.frameworks.torch.runtime import model_device

        module = trainable("torch").load(cfg, io, artifacts["train"], gpu=True)
        if model_device(module).type == "cuda":
            return TorchDeviceRunner(module, cfg.framework.value, STRICT_FP32)
    return CallableRunner(cfg.framework.value, framework_predictor(cfg, io, artifacts["train"], plan), io)


def latency_batches(io: IOSpec, plan: EnginePlan, wanted: list[int]) -> list[int]:
    """The recipe's batch sizes; on a GPU also the batch dim's largest value, where throughput is read."""
    return io.latency_batches(list(wanted) + ([io.batch_range()[2]] if plan.gpu else []))


def _with_throughput(per_batch: dict, runner: Any, feeds: Mapping[int, dict]) -> dict:
    """Samples per second at each batch's p50, and the host<->device copies (a device runner), on their own."""
    for batch, feed in feeds.items():
        entry = per_batch[f"b{batch}"]
        entry["throughput_per_s"] = batch * 1e3 / entry["p50"] if entry["p50"] else None
        if hasattr(runner, "copy_times"):
            entry.update(runner.copy_times(feed))
    return per_batch


def measure_now(cfg: DictConfig, plan: EnginePlan, io: IOSpec, artifacts: Mapping[str, Path]) -> tuple[dict, dict]:
    """(latency of the reference model and the engine, the conditions it was measured under), timed now,
    alone on this machine. `artifacts` maps stage names to the files the compile placed in its run dir.
    With `intra_op_threads: auto` the engine is first timed at every thread count; the fastest is kept."""
    v = cfg.verify.latency
    root = cache_root(cfg.cache) if cfg.cache.enabled else None
    batches = latency_batches(io, plan, v.batch_sizes)
    remembered_key = reference_latency.key(cfg, plan, artifacts, batches)
    earlier = reference_latency.remembered(root, remembered_key) if v.reuse_framework else None
    with working():  # loading data and the framework model is work too
        x_test, _ = samples(cfg, io)
        reference = None if earlier else timing_reference_runner(cfg, io, plan, artifacts)
        feeds = latency_feeds(io, x_test, batches, cfg.seed)
    result, conditions, quiet = {}, {}, QuietWindows(v.quiet_tries)
    with timing():
        started = datetime.now(timezone.utc)
        threads = None
        if _auto_threads(plan):
            threads, table = _fastest_threads(plan, artifacts["build"], feeds[max(feeds)], v, quiet)
            conditions["intra_op_threads"] = {"chosen": threads, "batch": max(feeds), "table": table}
        # the engine first: a framework's thread pool (torch's OpenMP) keeps spinning for a while after it ran
        timed = [("engine", timing_engine_runner(plan, artifacts["build"], intra_op_threads=threads))]
        for key, runner in timed + ([("framework", reference)] if reference else []):
            with runner:
                result[key] = _with_throughput(measure(runner, feeds, v.iterations, v.warmup, quiet, v.max_seconds,
                                                       warmup_seconds=v.warmup_seconds),
                                               runner, feeds)
    if earlier:  # the same reference, batches, settings and machine: its figures from that run (reference_latency.py)
        result["framework"] = earlier["figures"]
        conditions["framework_measured_at"] = earlier["measured_at"]
    else:
        conditions["framework_measured_at"] = started.isoformat(timespec="seconds")
        reference_latency.remember(root, remembered_key, result["framework"], conditions["framework_measured_at"])
    result = {key: result[key] for key in ("framework", "engine")}
    conditions.update({"measured_at": started.isoformat(timespec="seconds"), "host": platform.node(),
                       "cpus": os.cpu_count(), "backend": plan.backend, "alone": True,
                       "batches": [f"b{b}" for b in feeds], "math_mode": {"framework": "strict fp32",
                                                                          "engine": plan.math_mode.name}})
    if plan.gpu:
        conditions.update(gpu=gpu_conditions(), inputs="on the device (I/O binding); copies timed apart")
    return result, conditions


def time_engines(cfg: DictConfig, io: IOSpec, engines: Mapping[str, tuple[Any, Path]]) -> dict[str, dict]:
    """Latency of several engines (plan, file) on the same inputs, interleaved under one timing lock: the
    candidates of `precision: best`, compared in the same run."""
    v = cfg.verify.latency
    plans = [plan for plan, _ in engines.values()]
    with working():
        x_test, _ = samples(cfg, io)
        feeds = latency_feeds(io, x_test, latency_batches(io, plans[0], v.batch_sizes) if plans else [1], cfg.seed)
    with timing():
        runners, quiet = {}, QuietWindows(v.quiet_tries)
        for name, (plan, path) in engines.items():
            threads = _fastest_threads(plan, path, feeds[max(feeds)], v, quiet)[0] if _auto_threads(plan) else None
            runners[name] = timing_engine_runner(plan, path, intra_op_threads=threads)
        return compare(runners, {name: feeds for name in runners}, v, quiet)
