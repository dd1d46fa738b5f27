"""Beyond one process: data-parallel training (DDP, gloo on CPU), experiment tracking (MLflow, TensorBoard)."""

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import TINY, artifact_hashes

SMALL = [a for a in TINY if not a.startswith(("train.epochs", "data.limit"))] + ["train.epochs=3"]


def test_ddp_on_two_processes_matches_one_process_and_verifies(compile_cli):
    one = compile_cli("recipe=mlp_torch", *SMALL)
    two = compile_cli("recipe=mlp_torch", *SMALL, "train.devices=2")
    assert one.code == 0 and two.code == 0, two.output
    a1, a2 = one.report["metrics"]["accuracy"]["framework"], two.report["metrics"]["accuracy"]["framework"]
    assert a1 > 0.8 and abs(a1 - a2) * 100 <= 1.0, (a1, a2)
    assert two.report["training"]["processes"] == 2 and "DDP" in two.report["training"]["device"]
    assert two.report["metrics"]["max_abs_error"]["engine"] <= 1e-4  # the engine of the DDP model verifies
    # the result depends on the process count, so the key does: two runs never share a model.pt by accident
    assert one.report["stages"]["train"]["key"] != two.report["stages"]["train"]["key"]


def test_multi_device_training_is_torch_only(compile_cli):
    run = compile_cli("recipe=cnn_tf", "train.devices=2", "mode=lint")
    assert run.code == 2
    assert "train.devices: multi-device training is torch-only for now" in run.stderr


@pytest.mark.parametrize("override, words", [("train.devices=0", "a process count or auto"),
                                             ("train.node_rank=2", "a node index below train.nnodes"),
                                             ("train.nnodes=2", "several nodes need a fixed port")])
def test_distributed_settings_are_linted(compile_cli, override, words):
    run = compile_cli("recipe=mlp_torch", override, "mode=lint")
    assert run.code == 2 and words in run.stderr, run.stderr


@pytest.mark.slow
def test_an_mlflow_sweep_is_a_parent_run_with_one_child_per_job_whose_metrics_are_the_reports(compile_cli, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from compiler.tracking import final_metrics

    sweep = tmp_path / "sweep"
    run = compile_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "recipe=mlp_torch", *TINY,
                      "seed=0,1", "tracking.mlflow=true", f"hydra.sweep.dir={sweep}")
    assert run.code == 0, run.output
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("compiler")
    assert experiment.artifact_location == (tmp_path / "outputs" / "mlartifacts").as_uri()
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"summary.md", "summary.csv"}
    for child in children:
        report = json.loads((Path(child.data.tags["compiler.run_dir"]) / "report.json").read_text())
        assert child.data.metrics == pytest.approx(final_metrics(report) | {
            f"train.{k}": report["training"]["history"][-1][k] for k in ("loss", "accuracy", "val_accuracy")})
        history = client.get_metric_history(child.info.run_id, "train.val_accuracy")
        assert [(m.step, m.value) for m in history] == [(h["epoch"], pytest.approx(h["val_accuracy"]))
                                                        for h in report["training"]["history"]]
        assert child.data.params["train.epochs"] == "1" and child.data.params["engine.backend"] == "auto"
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == {"engine", "report.json", "report.md"}
        assert child.info.status == "FINISHED" and child.data.tags["compiler.status"] == "passed"
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert len(rows) == 2


def test_tensorboard_scalars_are_the_training_curves(compile_cli):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = compile_cli("recipe=mlp_torch", *SMALL, "tracking.tensorboard=true")
    assert run.code == 0, run.output
    events = EventAccumulator(str(run.run_dir / "tensorboard"))
    events.Reload()
    history = run.report["training"]["history"]
    assert [(s.step, s.value) for s in events.Scalars("train/val_accuracy")] == \
        [(h["epoch"], pytest.approx(h["val_accuracy"])) for h in history]
    assert len(events.Scalars("train/loss")) == 3


def test_trackers_left_off_are_never_imported(compile_cli, tmp_path):
    """A run without tracking pays nothing for it: mlflow and tensorboard that fail on import change nothing."""
    fake = tmp_path / "poison"
    for name in ("mlflow", "tensorboard"):
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text(f"raise ImportError('{name} was imported')\n")
    import os

    from tests.conftest import REPO

    run = compile_cli("recipe=mlp_torch", *TINY, env={"PYTHONPATH": f"{fake}:{REPO}:{os.environ.get('PYTHONPATH', '')}"})
    assert run.code == 0, run.output
    assert "was imported" not in run.output


def _jobs(sweep: Path) -> dict:
    """Per job: its status and accuracy in summary.csv, and the hash of every stage's artifact in its report."""
    rows = {r["job"]: r for r in csv.DictReader(open(sweep / "summary.csv"))}
    return {job: (r["status"], r["accuracy"], artifact_hashes(json.loads((sweep / job / "report.json").read_text())))
            for job, r in rows.items()}


@pytest.mark.slow
def test_a_ray_sweep_gives_the_joblib_sweeps_summary(compile_cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    jobs = ["recipe=mlp_torch", *TINY, "seed=0,1"]  # 2 jobs: one per worker on each launcher
    joblib = compile_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *jobs,
                         f"hydra.sweep.dir={tmp_path / 'joblib'}")
    ray = compile_cli("-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", *jobs,
                      f"hydra.sweep.dir={tmp_path / 'ray'}", env={"COMPILER_CACHE_DIR": str(tmp_path / "ray-cache")})
    assert joblib.code == 0 and ray.code == 0, ray.output
    expected = _jobs(tmp_path / "joblib")
    assert len(expected) == 2 and all(status == "passed" for status, _, _ in expected.values())
    assert _jobs(tmp_path / "ray") == expected  # built from a cold cache of its own: the same bytes
    assert (tmp_path / "ray" / "pareto.png").is_file()


@pytest.mark.slow
def test_submitit_local_runs_a_sweep_like_slurm_would(compile_cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run = compile_cli("-m", "hydra/launcher=submitit_local", "recipe=mlp_torch", *TINY, "seed=0,1",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert run.code == 0, run.output
    jobs = _jobs(tmp_path / "sweep")
    assert len(jobs) == 2 and all(status == "passed" for status, _, _ in jobs.values())
    assert (tmp_path / "sweep" / ".submitit").is_dir()  # really run by submitit
