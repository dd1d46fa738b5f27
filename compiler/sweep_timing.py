"""A sweep's engines timed together at its end, in interleaved rounds in one process.

Each job times its engine alone at its own end; on a shared or virtual machine the speed drifts by tens of
percent between those moments (identical engines 40 % apart at batch 1 on a 2-vCPU VM), so figures taken
by different jobs do not compare. Timed together, round by round, every engine meets the same drift, and
the summary and its Pareto front rank these figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compiler.iospec import IOSpec
from compiler.machine_lock import timing
from compiler.plan import resolve


def _runner_and_feeds(job_dir: Path) -> tuple[Any, dict, Any]:
    """The job's engine as its plan runs it, its latency feeds (random, at opt shapes), and its latency settings."""
    from omegaconf import OmegaConf

    from compiler.schema import RecipeConfig
    from compiler.verify.latency import latency_feeds
    from compiler.verify.runners import engine_runner

    report = json.loads((job_dir / "report.json").read_text())
    cfg = OmegaConf.merge(OmegaConf.structured(RecipeConfig), report["recipe_config"])
    plan = resolve(cfg)
    built = report["engine"].get("plan", {}).get("precision")
    if plan.search and built:  # precision=best: the engine is the winner's
        plan = plan.with_precision(built)
    io = IOSpec.from_cfg(cfg)
    batches = io.latency_batches(cfg.verify.latency.batch_sizes)
    feeds = latency_feeds(io, None, sorted({batches[0], batches[-1]}), cfg.seed)
    return engine_runner(plan, job_dir / report["stages"]["build"]["artifact"]), feeds, cfg.verify.latency


def time_together(sweep_dir: Path, jobs: list[str]) -> dict[str, dict[str, float]]:
    """b<N> -> p50 ms for each job's engine, all timed in the same interleaved rounds, alone on the machine."""
    from types import SimpleNamespace

    from compiler.verify.latency import ROUNDS, compare

    runners, feeds, settings = {}, {}, None
    for job in jobs:
        runners[job], feeds[job], latency = _runner_and_feeds(sweep_dir / job)
        settings = settings or latency
    if not runners:
        return {}
    # each engine gets what a job's own timing gets, max_seconds per batch, spread over the rounds by time, not
    # by count: at batch 1 a count of calls lasts milliseconds, too short to average the machine's drift
    per_round = SimpleNamespace(iterations=10**9, warmup=settings.warmup, warmup_seconds=settings.warmup_seconds,
                                max_seconds=settings.max_seconds / ROUNDS, quiet_tries=settings.quiet_tries)
    with timing():
        timed = compare(runners, feeds, per_round)
    return {job: {batch: figures["p50"] for batch, figures in per.items()} for job, per in timed.items()}
