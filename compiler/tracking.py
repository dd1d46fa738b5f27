"""Experiment tracking: each compile as an MLflow run, a sweep as a parent run with one child per job, and
the training curves as TensorBoard scalars. Both optional (the `tracking` extra), both off by default, and
neither imported unless a recipe turns it on.

The MLflow store is MLFLOW_TRACKING_URI where set, else a SQLite file under ./outputs (MLflow's embedded
default), with artifacts beside it. What is logged is read from report.json after it is written, so the
run's metrics are the report's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from compiler.onnx_files import artifact_files

if TYPE_CHECKING:
    from omegaconf import DictConfig

PARENT_ENV = "COMPILER_MLFLOW_PARENT_RUN"   # set for a sweep's jobs: the parent run's id
PARENT_FILE = "mlflow_parent_run"           # the same, in the sweep dir, for launchers that do not pass env


@dataclass
class TrackingConfig:
    mlflow: bool = False         # log every compile as an MLflow run (sweeps: a parent run, one child per job)
    tensorboard: bool = False    # write the training curves as TensorBoard scalars into <run dir>/tensorboard
    experiment: str = "compiler"


def missing_packages(cfg: DictConfig) -> list[tuple[str, str]]:
    """(key, package) for each tracker the recipe turns on whose package is not installed."""
    import importlib.util

    wanted = [("tracking.mlflow", "mlflow", cfg.tracking.mlflow),
              ("tracking.tensorboard", "tensorboard", cfg.tracking.tensorboard)]
    return [(key, module) for key, module, on in wanted if on and importlib.util.find_spec(module) is None]


def store_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path.cwd() / 'outputs' / 'mlflow.db').resolve()}"


def _experiment(mlflow: Any, name: str) -> str:
    """The experiment's id, created with its artifacts under ./outputs when the store is the local default."""
    uri = store_uri()
    local = uri.startswith("sqlite:///") and uri.endswith(str(Path("outputs") / "mlflow.db"))
    mlflow.set_tracking_uri(uri)  # (which also sets MLFLOW_TRACKING_URI)
    found = mlflow.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri() if local else None
    return mlflow.create_experiment(name, artifact_location=location)


def _quiet() -> None:
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def start_sweep(cfg: DictConfig, sweep_dir: Path) -> None:
    """Open the parent run of a sweep; its jobs find it through the environment or the sweep dir."""
    import mlflow

    _quiet()
    run = mlflow.MlflowClient(store_uri()).create_run(_experiment(mlflow, cfg.tracking.experiment),
                                                      run_name=f"sweep {sweep_dir.name}",
                                                      tags={"compiler.sweep_dir": str(sweep_dir)})
    os.environ[PARENT_ENV] = run.info.run_id
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / PARENT_FILE).write_text(run.info.run_id)


def end_sweep(sweep_dir: Path) -> None:
    """Close the parent run, with the sweep's summary as its artifacts."""
    import mlflow

    run_id = _parent_id(sweep_dir / "job")
    if not run_id:
        return
    client = mlflow.MlflowClient(store_uri())
    for name in ("summary.md", "summary.csv", "pareto.png"):
        if (sweep_dir / name).is_file():
            client.log_artifact(run_id, str(sweep_dir / name))
    client.set_terminated(run_id)


def _parent_id(run_dir: Path) -> str | None:
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    marker = run_dir.parent / PARENT_FILE
    return marker.read_text().strip() if marker.is_file() else None


def flat_params(tree: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """The composed recipe as MLflow params: dotted keys, values as text (MLflow keeps 6000 characters)."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from flat_params(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), json.dumps(tree)[:6000] if not isinstance(tree, str) else tree[:6000]


def final_metrics(report: dict) -> dict[str, float]:
    """The report's figures as MLflow metrics: accuracy, error maxima, latency p50 per model and batch."""
    m, out = report["metrics"], {}
    for group in ("accuracy", "max_abs_error", "max_rel_error"):
        out.update({f"{group}.{k}": v for k, v in m.get(group, {}).items() if v is not None})
    for model, per_batch in m.get("latency_ms", {}).items():
        out.update({f"latency_ms.{model}.{b}": v["p50"] for b, v in per_batch.items()})
    return {k: float(v) for k, v in out.items()}


def log_job(cfg: DictConfig, report: dict, run_dir: Path) -> str:
    """One compile as an MLflow run (a child of its sweep's run): recipe, curves, figures, report, engine."""
    import mlflow

    _quiet()
    experiment = _experiment(mlflow, cfg.tracking.experiment)
    client = mlflow.MlflowClient(store_uri())
    tags = {"compiler.recipe": report["recipe"], "compiler.status": report["status"], "compiler.run_dir": str(run_dir)}
    parent = _parent_id(run_dir)
    if parent:
        tags["mlflow.parentRunId"] = parent
    run_id = client.create_run(experiment, run_name=run_dir.name, tags=tags).info.run_id
    params = sorted(flat_params(report["recipe_config"]))
    for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
        client.log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in params[i:i + 100]])
    for h in report["training"].get("history", []):
        for name in ("loss", "accuracy", "val_accuracy"):
            if h.get(name) is not None:
                client.log_metric(run_id, f"train.{name}", float(h[name]), step=int(h["epoch"]))
    for name, value in final_metrics(report).items():
        client.log_metric(run_id, name, value)
    for name in ("report.md", "report.json"):
        client.log_artifact(run_id, str(run_dir / name))
    engine = report["stages"].get("build", {}).get("artifact")
    if engine:
        for file in artifact_files(run_dir / engine):
            client.log_artifact(run_id, str(file), "engine")
    client.set_terminated(run_id, "FINISHED" if report["status"] == "passed" else "FAILED")
    return run_id


def write_tensorboard(report: dict, run_dir: Path) -> Path:
    """The training curves (loss, train and test accuracy per epoch) as TensorBoard scalars. Written with
    TensorBoard's record writer and protos alone: its summary writers import TensorFlow (or torch)."""
    import socket
    import time

    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    folder = run_dir / "tensorboard"
    folder.mkdir(exist_ok=True)
    now = time.time()
    with open(folder / f"events.out.tfevents.{int(now)}.{socket.gethostname()}", "wb") as f:
        writer = RecordWriter(f)
        writer.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        for h in report["training"].get("history", []):
            values = [Summary.Value(tag=f"train/{name}", simple_value=float(h[name]))
                      for name in ("loss", "accuracy", "val_accuracy") if h.get(name) is not None]
            writer.write(Event(wall_time=now, step=int(h["epoch"]), summary=Summary(value=values)).SerializeToString())
    return folder
