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
    assert {n: s["cached"] for n, s in second.report["stages"].items()} == {
        "train": True, "export": True, "surgery": True, "build": True, "verify": True, "latency": False}
    assert {n: s["sha256"] for n, s in first.report["stages"].items() if n not in ("verify", "latency")} == \
        {n: s["sha256"] for n, s in second.report["stages"].items() if n not in ("verify", "latency")}
    cached = {n: s["cached"] for n, s in engine_only.report["stages"].items()}
    assert cached == {"train": True, "export": True, "surgery": True, "build": False, "verify": False,
                      "latency": False}


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


def test_a_run_composes_its_command_line_once_and_a_bad_one_still_exits_2_with_our_diagnosis(compile_cli, tmp_path):
    """Hydra's own composition is the check (none beforehand, and not Hydra's second one that only reads
    hydra.mode); its failure is worded by us, never by Hydra ("To append to your config use ...")."""
    counter = tmp_path / "compositions"
    hook = tmp_path / "sitecustomize.py"
    hook.write_text(
        "import atexit, hydra._internal.hydra as h\n"
        "calls = []\n"
        "original = h.Hydra.compose_config\n"
        "def counted(self, *a, **k):\n"
        "    calls.append(1)\n"
        "    return original(self, *a, **k)\n"
        "h.Hydra.compose_config = counted\n"
        f"atexit.register(lambda: open({str(counter)!r}, 'a').write(f'{{len(calls)}}\\n'))\n")
    env = {"PYTHONPATH": str(tmp_path)}
    good = compile_cli("recipe=mlp_torch", *TINY, env=env)
    assert good.code == 0, good.output
    assert counter.read_text().split()[-1] == "1"   # the main process (the plot's process composes nothing)
    bad = compile_cli("recipe=mlp_torch", *TINY, "model.inptu=3", env=env)
    assert bad.code == 2 and "model.inptu: unknown key" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr and "To append to your config" not in bad.stderr


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


def test_a_plot_cache_that_cannot_take_the_picture_costs_the_run_nothing(tmp_path):
    """`<cache>/.plots` as a file, not a folder: the picture cannot be kept, the run's own plot is still there."""
    from compiler.training_plot import PLOT, TrainingPlot

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".plots").write_text("in the way")
    plot = TrainingPlot(tmp_path / "run", cache)
    plot.start([{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_accuracy": 0.4},
                {"epoch": 2, "loss": 0.5, "accuracy": 0.8, "val_accuracy": 0.7}])
    assert plot.wait() == PLOT
    assert (tmp_path / "run" / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (cache / ".plots").read_text() == "in the way"
