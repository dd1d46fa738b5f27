"""Trust in what the compiler reports: the cache cannot be changed from a run dir, latency is measured now
and alone, errors show their cause, and nothing the user sets is silently ignored."""

import csv
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, artifact_hashes


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_editing_a_placed_artifact_never_reaches_the_cache_or_other_runs(compile_cli, cache_dir):
    first = compile_cli("recipe=cnn_torch", *TINY)
    second = compile_cli("recipe=cnn_torch", *TINY)
    assert first.code == second.code == 0
    clean = first.report["stages"]["surgery"]["sha256"]
    edited = second.run_dir / "model.clean.onnx"
    edited.write_bytes(edited.read_bytes() + b"\x00tampered")
    assert _sha(first.run_dir / "model.clean.onnx") == clean  # the older run dir is intact
    entry = next(cache_dir.glob(f"surgery/{first.report['stages']['surgery']['key']}/model.clean.onnx"))
    assert _sha(entry) == clean  # and so is the cache
    third = compile_cli("recipe=cnn_torch", *TINY)
    assert third.code == 0
    assert artifact_hashes(third.report) == artifact_hashes(first.report)


def test_a_damaged_cache_entry_is_evicted_rebuilt_and_reported(compile_cli, cache_dir):
    first = compile_cli("recipe=cnn_torch", *TINY)
    entry = cache_dir / "surgery" / first.report["stages"]["surgery"]["key"] / "model.clean.onnx"
    entry.write_bytes(b"damaged")
    again = compile_cli("recipe=cnn_torch", *TINY)
    assert again.code == 0, again.output
    assert "the surgery entry" in again.output and "was damaged" in again.output and "evicted, rebuilding" in again.output
    assert not again.report["stages"]["surgery"]["cached"]
    assert again.report["stages"]["surgery"]["sha256"] == first.report["stages"]["surgery"]["sha256"]
    assert _sha(entry) == first.report["stages"]["surgery"]["sha256"]  # the entry is whole again


def test_latency_is_measured_by_every_run_even_when_verify_is_cached(compile_cli):
    first = compile_cli("recipe=cnn_torch", *TINY)
    second = compile_cli("recipe=cnn_torch", *TINY)
    assert second.report["stages"]["verify"]["cached"]
    a, b = first.report["latency_conditions"], second.report["latency_conditions"]
    assert a["alone"] and b["alone"] and b["measured_at"] >= a["measured_at"]
    assert second.report["metrics"]["latency_ms"] != first.report["metrics"]["latency_ms"]  # a new measurement
    assert "alone: no other compile on this machine computed meanwhile" in (second.run_dir / "report.md").read_text()


def test_flags_of_the_other_backend_do_not_rebuild_an_engine(compile_cli):
    first = compile_cli("recipe=cnn_torch", *TINY)
    other = compile_cli("recipe=cnn_torch", *TINY, "engine.tensorrt.workspace_mib=512")
    assert first.report["engine"]["backend"] == "onnxruntime"
    assert other.report["stages"]["build"]["cached"] and other.report["stages"]["verify"]["cached"]


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                    reason="the `launchers` extra (hydra-joblib-launcher) is not installed")
def test_a_parallel_sweep_times_every_engine_alone(compile_cli, tmp_path):
    """4 jobs on 2 workers: while one job times its engine, no other job computes (the machine-wide lock),
    and a timing window in which other processes still used the CPU (a worker starting its next job) is
    timed again. Each job records the share of the machine others used while it timed."""
    run = compile_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "recipe=cnn_torch", *TINY,
                      "verify.latency.quiet_tries=2", "seed=0,1", "verify.samples=32,33",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert run.code == 0, run.output
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "summary.csv")))
    assert len(rows) == 4 and all(r["latency_measured"] and float(r["latency_b1_ms"]) > 0 for r in rows)
    # the summary ranks figures of all four engines timed together, in the same rounds, at the sweep's end
    assert len({r["latency_measured"] for r in rows}) == 1 and rows[0]["latency_measured"].endswith(" together")
    assert all(float(r["job_latency_b1_ms"]) > 0 for r in rows)  # each job's own figure stays beside it
    windows = []
    for job in (tmp_path / "sweep").iterdir():
        if (job / "report.json").is_file():
            report = json.loads((job / "report.json").read_text())
            for per_batch in report["metrics"]["latency_ms"].values():
                for figures in per_batch.values():
                    assert figures["others_cpu_share"] <= 0.05 or figures["tries"] == figures["tries_allowed"], figures
            windows.append(report["latency_conditions"]["measured_at"])
    assert len(windows) == 4


def test_two_runs_in_the_same_second_get_their_own_run_dirs(tmp_path, cache_dir):
    env = {**os.environ, "COMPILER_CACHE_DIR": str(cache_dir)}
    cmd = [sys.executable, "-m", "compiler", "recipe=mlp_torch", *TINY]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = sorted((tmp_path / "outputs" / "mlp_torch").iterdir())
    assert len(runs) == 2 and all((r / "report.json").is_file() for r in runs)
    logs = [(r / "compiler.log").read_text() for r in runs]
    assert all(log.count("stage train") == 1 for log in logs)  # nobody appended to the other's log


def test_errors_in_user_code_show_their_cause_and_debug_shows_the_traceback(compile_cli):
    args = ("recipe=cnn_torch", *TINY, "model.layers=[]",
            "+model.factory={_target_: torch.nn.Linear, in_features: -1, out_features: 2}")
    run = compile_cli(*args)
    assert run.code == 1
    assert "Error in call to target 'torch.nn.modules.linear.Linear'" in run.stderr and "<- caused by" in run.stderr
    assert "negative dimension" in run.stderr and "HYDRA_FULL_ERROR" not in run.stderr
    assert "Traceback" not in run.output and "COMPILER_DEBUG=1" in run.stderr
    debug = compile_cli(*args, env={"COMPILER_DEBUG": "1"})
    assert debug.code == 1 and "Traceback" in debug.output
    typo = compile_cli("recipe=cnn_torch", "model.layers=[]", "+model.factory={_target_: torch.nn.NoSuchModule}")
    assert typo.code == 2 and "torch.nn has no attribute 'NoSuchModule'" in typo.stderr  # a typo is found at lint


def test_after_quantization_the_report_says_which_gate_applies(compile_cli):
    run = compile_cli("recipe=cnn_torch", *TINY, "engine.precision=int8")
    assert run.code == 0, run.output
    gate = next(g for g in run.report["gates"] if g["name"] == "reduced-precision outputs (informational)")
    assert "not gated by atol/rtol" in gate["detail"] and "the accuracy budget against the fp32 model is the gate" \
        in gate["detail"]
    assert "reduced precision changes outputs by design" in (run.run_dir / "report.md").read_text()


def test_batchnorm_training_curves_measure_what_the_final_model_measures(compile_cli):
    run = compile_cli("recipe=resnet_torch", *[a for a in TINY if not a.startswith("train.epochs")], "train.epochs=2")
    assert run.code == 0, run.output
    history = run.report["training"]["history"]
    assert all(h["bn_stats"] == "re-estimated" for h in history)
    assert history[-1]["val_accuracy"] == pytest.approx(run.report["metrics"]["accuracy"]["framework"])
