"""The entry point end to end: artifacts, report.json interface, exit codes, recipe folders, caching."""

import json
import os
import textwrap

from tests.conftest import REPO, TINY

REPORT_KEYS = [("status",), ("metrics", "accuracy", "framework"), ("metrics", "accuracy", "engine"),
               ("metrics", "max_abs_error", "engine"), ("metrics", "latency_ms", "framework", "b1"),
               ("metrics", "latency_ms", "framework", "b32"), ("metrics", "latency_ms", "engine", "b1"),
               ("metrics", "latency_ms", "engine", "b32")]


def _get(d, keys):
    for k in keys:
        d = d[k]
    return d


def test_compile_writes_every_artifact_and_the_report(compile_cli):
    run = compile_cli("recipe=cnn_torch", *TINY)
    assert run.code == 0, run.output
    for name in ("model.pt", "model.onnx", "model.clean.onnx", "model.opt.onnx", "report.md", "report.json",
                 "plots/training.png", "compiler.log"):
        assert (run.run_dir / name).is_file(), name
    report = run.report
    for keys in REPORT_KEYS:
        assert _get(report, keys) is not None, keys
    assert report["status"] == "passed"
    for stage in ("train", "export", "surgery", "build", "verify"):
        entry = report["stages"][stage]
        assert entry["artifact"] and len(entry["sha256"]) == 64 and entry["seconds"] >= 0
    assert report["metrics"]["max_abs_error"]["engine"] <= 1e-4
    assert report["engine"]["backend"] == "onnxruntime" and "TensorRT cannot run here" in report["engine"]["reason"]
    ledger = {(r["reference"], r["candidate"]) for r in report["ledger"]}
    assert ledger == {("torch", "model.onnx"), ("model.onnx", "model.clean.onnx"), ("model.clean.onnx", "engine"),
                      ("torch", "engine")}
    assert "## Error ledger" in (run.run_dir / "report.md").read_text()


def test_failed_gate_exits_3_and_keeps_artifacts(compile_cli):
    run = compile_cli("recipe=cnn_torch", *TINY, "verify.atol=0", "verify.rtol=0")
    assert run.code == 3, run.output
    assert run.report["status"] == "failed"
    assert any(not g["passed"] for g in run.report["gates"])
    assert (run.run_dir / "model.opt.onnx").is_file()
    assert "FAILED gate" in run.stdout


def test_failed_stage_exits_1_and_says_which(compile_cli):
    run = compile_cli("recipe=cnn_torch", *TINY, "train.optimizer.lr=1e30", "train.optimizer.name=sgd")
    assert run.code == 1, run.output
    assert "stage 'train' failed" in run.stderr and "train.optimizer.lr" in run.stderr
    assert run.report["status"] == "failed" and run.report["stages"]["train"]["error"]


def test_second_run_is_served_from_the_cache(compile_cli):
    first = compile_cli("recipe=cnn_torch", *TINY)
    second = compile_cli("recipe=cnn_torch", *TINY)
    engine_only = compile_cli("recipe=cnn_torch", *TINY, "engine.onnxruntime.optimization_level=basic")
    assert first.code == second.code == engine_only.code == 0
    assert all(s["cached"] for s in second.report["stages"].values())
    assert {n: s["sha256"] for n, s in first.report["stages"].items() if n != "verify"} == \
        {n: s["sha256"] for n, s in second.report["stages"].items() if n != "verify"}
    cached = {n: s["cached"] for n, s in engine_only.report["stages"].items()}
    assert cached == {"train": True, "export": True, "surgery": True, "build": False, "verify": False}


def test_a_rerun_times_the_engine_now_and_shows_the_unchanged_references_earlier_figures(compile_cli):
    import time

    first = compile_cli("recipe=mlp_torch", *TINY)
    time.sleep(1.1)  # measured_at has whole seconds
    second = compile_cli("recipe=mlp_torch", *TINY)
    fresh = compile_cli("recipe=mlp_torch", *TINY, "verify.latency.reuse_framework=false")
    assert first.code == second.code == fresh.code == 0
    before, after = first.report["latency_conditions"], second.report["latency_conditions"]
    assert after["framework_measured_at"] == before["measured_at"] != after["measured_at"]
    assert second.report["metrics"]["latency_ms"]["framework"] == first.report["metrics"]["latency_ms"]["framework"]
    assert second.report["metrics"]["latency_ms"]["engine"] != first.report["metrics"]["latency_ms"]["engine"]
    assert f"the framework reference's figures are those measured at {before['measured_at']}" in \
        (second.run_dir / "report.md").read_text()
    now = fresh.report["latency_conditions"]
    assert now["framework_measured_at"] == now["measured_at"]
    # another batch list is another key: timed afresh
    other = compile_cli("recipe=mlp_torch", *TINY, "verify.latency.batch_sizes=[2]")
    assert other.report["latency_conditions"]["framework_measured_at"] == other.report["latency_conditions"]["measured_at"]


def test_a_command_line_that_composed_is_remembered_and_a_bad_one_still_exits_2(compile_cli, cache_dir):
    """The pre-check's verdict is kept per command line and config files: three command lines, three entries."""
    runs = [compile_cli("recipe=mlp_torch", *TINY, *extra) for extra in ([], [], ["train.epochs=2"])]
    assert [r.code for r in runs] == [0, 0, 0]
    assert len(list((cache_dir / ".compose").iterdir())) == 2
    bad = compile_cli("recipe=mlp_torch", *TINY, "model.inptu=3")
    assert bad.code == 2 and "model.inptu: unknown key" in bad.stderr and "Traceback" not in bad.stderr
    assert len(list((cache_dir / ".compose").iterdir())) == 2  # failures are composed (and diagnosed) every time


def test_cache_can_be_disabled(compile_cli, cache_dir):
    run = compile_cli("recipe=cnn_torch", *TINY, "cache.enabled=false")
    assert run.code == 0, run.output
    assert not cache_dir.exists()
    assert not any(p.name.startswith(".") and p.is_dir() for p in run.run_dir.iterdir() if p.name != ".hydra")


def test_user_recipe_folder_extends_a_builtin_and_wins(compile_cli, tmp_path):
    user = tmp_path / "my_recipes"
    user.mkdir()
    (user / "small_cnn.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - cnn_torch
          - _self_
        model:
          layers:
            - conv2d: {filters: 4, kernel: 3, activation: relu}
            - global_avg_pool: {}
            - dense: {units: 10}
    """))
    env = {"COMPILER_RECIPE_PATH": os.pathsep.join([str(user), str(tmp_path / "missing")])}
    run = compile_cli("recipe=small_cnn", *TINY, env=env)
    assert run.code == 0, run.output
    layers = run.report["recipe_config"]["model"]["layers"]
    assert layers[0]["conv2d"]["filters"] == 4 and run.report["recipe_config"]["train"]["epochs"] == 1


def test_user_recipe_shadows_a_builtin_of_the_same_name(compile_cli, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, seed in ((first, 111), (second, 222)):
        folder.mkdir()
        builtin = (REPO / "recipes" / "cnn_torch.yaml").read_text()
        (folder / "cnn_torch.yaml").write_text(builtin + f"seed: {seed}\n")
    run = compile_cli("--cfg", "job", "recipe=cnn_torch", env={"COMPILER_RECIPE_PATH": f"{first}{os.pathsep}{second}"})
    assert run.code == 0, run.output
    assert "seed: 111" in run.stdout  # the first folder on the path wins, then the second, then the built-ins


def test_default_run_dir_is_outputs_recipe_timestamp(compile_cli, tmp_path):
    run = compile_cli("recipe=cnn_torch", *TINY, "hydra.run.dir=outputs/${hydra:runtime.choices.recipe}/fixed")
    assert run.code == 0, run.output
    assert json.loads((tmp_path / "outputs" / "cnn_torch" / "fixed" / "report.json").read_text())["status"] == "passed"
