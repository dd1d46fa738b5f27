"""Sweeps (`-m`): every combination linted before any job starts, and a summary at the end.

The summary callback reads each job's `job.json` (written by the entry point whatever happened)
and its report.json, and writes summary.md, summary.csv and pareto.png into the sweep directory,
marking the latency/accuracy Pareto front.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from compiler.errors import describe
from compiler.sweep_timing import time_together
from compiler.tracking import end_sweep, start_sweep

JOB_FILE = "job.json"


def sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """The override list of every job a basic sweep over `overrides` would run."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def prelint(overrides: list[str], compose_and_lint) -> list[tuple[list[str], str]]:
    """(job overrides, problem text) for every combination that would fail lint."""
    failures = []
    for job in sweep_combinations(overrides):
        message = compose_and_lint(job)
        if message:
            failures.append((job, message))
    return failures


def _row(job_dir: Path) -> dict[str, Any]:
    job = json.loads((job_dir / JOB_FILE).read_text())
    row = {"job": job_dir.name, "overrides": " ".join(job["overrides"]), "exit_code": job["code"],
           "status": {0: "passed", 1: "failed", 2: "invalid", 3: "gate failed"}.get(job["code"], "failed"),
           "failed_stage": "", "error": job.get("error") or ""}
    report_path = job_dir / "report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        m = report["metrics"]
        engine_file = report["stages"].get("build", {}).get("artifact")
        engine_latency = m["latency_ms"].get("engine", {})
        largest = max(engine_latency, key=lambda b: int(b[1:]), default=None)
        conditions = report.get("latency_conditions") or {}
        row.update({
            "accuracy": m["accuracy"].get("engine"),
            "max_abs_error": m["max_abs_error"].get("engine"),
            "latency_b1_ms": engine_latency.get("b1", {}).get("p50"),
            "latency_bmax": largest, "latency_bmax_ms": engine_latency.get(largest, {}).get("p50") if largest else None,
            "latency_measured": f"{conditions.get('host', '?')} {conditions.get('measured_at', '?')}"
            if conditions.get("alone") else "",
            "engine_bytes": (job_dir / engine_file).stat().st_size if engine_file and (job_dir / engine_file).is_file() else None,
            "build_s": report["stages"].get("build", {}).get("build_seconds"),
            "failed_stage": next((n for n, s in report["stages"].items() if s.get("error")), ""),
            "error": row["error"] or (report.get("error") or ""),
        })
    return row


def comparable(rows: list[dict]) -> list[dict]:
    """Rows whose latency was measured alone, now, on the machine most of the sweep ran on: only these are
    compared (a job on another host of a cluster is listed, not ranked)."""
    timed = [r for r in rows if r.get("latency_measured") and r.get("latency_b1_ms") is not None]
    hosts = [r["latency_measured"].split(" ")[0] for r in timed]
    host = max(set(hosts), key=hosts.count) if hosts else None
    return [r for r in timed if r["latency_measured"].split(" ")[0] == host]


def pareto(rows: list[dict]) -> set[str]:
    """Jobs no other comparable job beats on both latency at batch 1 (lower) and accuracy (higher)."""
    points = [r for r in comparable(rows) if r.get("accuracy") is not None]
    front = set()
    for r in points:
        dominated = any(o is not r and o["latency_b1_ms"] <= r["latency_b1_ms"] and o["accuracy"] >= r["accuracy"]
                        and (o["latency_b1_ms"] < r["latency_b1_ms"] or o["accuracy"] > r["accuracy"]) for o in points)
        if not dominated:
            front.add(r["job"])
    return front


COLUMNS = ["job", "overrides", "status", "exit_code", "failed_stage", "accuracy", "max_abs_error", "latency_b1_ms",
           "latency_bmax", "latency_bmax_ms", "latency_measured", "job_latency_b1_ms", "engine_bytes", "build_s",
           "pareto", "error"]


def _time_together(sweep_dir: Path, rows: list[dict]) -> str:
    """Replace each row's latency by the figures of all engines timed together now (sweep_timing.py), keeping
    the job's own b1 figure beside it; the note says what happened."""
    import platform
    from datetime import datetime, timezone


    jobs = [r["job"] for r in rows if r.get("latency_b1_ms") is not None]
    try:
        together = time_together(sweep_dir, jobs)
    except Exception as exc:  # the jobs' own figures stay; the summary says why
        return f"Timing the engines together failed ({describe(exc)}); figures are each job's own, taken alone."
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for r in rows:
        if r["job"] in together:
            r["job_latency_b1_ms"] = r["latency_b1_ms"]
            figures = together[r["job"]]
            r["latency_b1_ms"] = figures.get("b1")
            r["latency_bmax_ms"] = figures.get(r.get("latency_bmax") or "", r["latency_bmax_ms"])
            r["latency_measured"] = f"{platform.node()} {when} together"
    return ("Latency: engine p50 per call, every engine timed together at the end of the sweep in interleaved "
            "rounds, alone on this machine (so a drift of the machine hits all alike), never taken from the cache; "
            "job_latency_b1_ms is each job's own figure, taken alone at its end.")


def write_summary(sweep_dir: Path) -> list[dict]:
    rows = [_row(d) for d in sorted(sweep_dir.iterdir(), key=lambda p: p.name) if (d / JOB_FILE).is_file()]
    note = _time_together(sweep_dir, rows)
    front = pareto(rows)
    for r in rows:
        r["pareto"] = r["job"] in front
    with open(sweep_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    lines = [f"# Sweep summary: {len(rows)} jobs, {sum(r['exit_code'] != 0 for r in rows)} failed", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r.get(c)).replace("|", "/").replace("\n", " ")[:200] for c in COLUMNS) + " |"
              for r in rows]
    lines += ["", note + " Only figures from the sweep's main host are ranked."]
    if _plot(rows, sweep_dir / "pareto.png"):
        lines += ["", "Pareto front (engine latency at batch 1 vs accuracy): ![pareto](pareto.png)"]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return rows


def _plot(rows: list[dict], path: Path) -> bool:
    points = [r for r in comparable(rows) if r.get("accuracy") is not None]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(points):  # each job by its overrides, in the legend, so a point says what it is
        ax.scatter(r["latency_b1_ms"], r["accuracy"], marker="o" if r["pareto"] else "x", s=40,
                   label=f"{r['overrides'] or r['job']}" + (" (Pareto)" if r["pareto"] else ""))
    front = sorted((r for r in points if r["pareto"]), key=lambda r: r["latency_b1_ms"])
    ax.plot([r["latency_b1_ms"] for r in front], [r["accuracy"] for r in front], c="tab:red", lw=1)
    ax.set(xlabel="engine latency, batch 1 (ms)", ylabel="engine top-1 accuracy", title="Pareto front")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


class SweepSummary(Callback):
    """Hydra callback: summary.md / summary.csv / pareto.png once every job of a sweep has run; with
    tracking.mlflow, the sweep's parent MLflow run around its jobs' runs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("tracking", {}).get("mlflow"):
            start_sweep(config, Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            rows = write_summary(sweep_dir)
            print(f"compiler: sweep summary ({len(rows)} jobs): {sweep_dir / 'summary.md'}")
        if config.get("tracking", {}).get("mlflow"):
            end_sweep(sweep_dir)
