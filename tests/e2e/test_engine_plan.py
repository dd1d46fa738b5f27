"""The EnginePlan end to end: TensorRT 11 lint with the version mocked, keys that cover what stages read,
ModelOpt conversions verified against fp32, `precision: best` and `intra_op_threads: auto`."""

import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.conftest import REPO, TINY, recipe_cfg


def fake_tensorrt(folder: Path, version: str) -> dict:
    """An environment where TensorRT `version` is installed and a GPU (compute capability 9.0) is present, as
    far as anything that does not build an engine can tell: a package with its dist-info, and nvidia-smi."""
    site, bin_dir = folder / "site", folder / "bin"
    (site / "tensorrt").mkdir(parents=True)
    (site / "tensorrt" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    info = site / f"tensorrt-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tensorrt\nVersion: {version}\n")
    (info / "top_level.txt").write_text("tensorrt\n")
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 9.0\n")
    smi.chmod(0o755)
    import os

    return {"PYTHONPATH": f"{site}:{REPO}", "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_tensorrt_11_mocked_lints_fp16_and_names_removed_options(compile_cli, tmp_path):
    env = fake_tensorrt(tmp_path / "trt11", "11.4.0")
    ok = compile_cli("recipe=cnn_torch", "engine.backend=tensorrt", "engine.precision=fp16", "mode=lint", env=env)
    assert ok.code == 0, ok.output
    assert "recipe 'cnn_torch' is valid" in ok.stdout
    bad = compile_cli("recipe=cnn_torch", "engine.backend=tensorrt", "engine.precision=fp16",
                      "engine.tensorrt.precision_constraints=obey", "mode=lint", env=env)
    assert bad.code == 2, bad.output
    assert "engine.tensorrt.precision_constraints: removed in TensorRT 11: BuilderFlag.OBEY/PREFER_PRECISION_" \
           "CONSTRAINTS" in bad.stderr
    assert "replace it: keep nodes in fp32 in the graph: quantize.keep_fp32=[NODE_A,NODE_B]" in bad.stderr
    # the same option is valid on TensorRT 10 with weak typing
    env10 = fake_tensorrt(tmp_path / "trt10", "10.16.1")
    weak = compile_cli("recipe=cnn_torch", "engine.backend=tensorrt", "engine.precision=fp16",
                       "engine.tensorrt.precision_constraints=obey", "engine.tensorrt.strongly_typed=false",
                       "mode=lint", env=env10)
    assert weak.code == 0, weak.output


def test_cfg_engine_is_read_only_by_the_plan_module_and_lint():
    readers = subprocess.run(["grep", "-rlE", r"cfg\.engine|cfg\[.engine.\]", "compiler", "--include=*.py"],
                             cwd=REPO, capture_output=True, text=True).stdout.split()
    assert sorted(readers) == ["compiler/plan.py"], readers  # lint reaches it through plan.plan_problems


def test_a_stage_sees_only_the_sections_its_key_holds():
    from omegaconf.errors import ConfigAttributeError

    from compiler.pipeline import STAGES, stage_view
    from compiler.plan import resolve

    cfg = recipe_cfg("cnn_torch")
    plan = resolve(cfg)
    build = next(s for s in STAGES if s.name == "build")
    view = stage_view(cfg, build.sections(plan))
    with pytest.raises(ConfigAttributeError):
        view.data  # noqa: B018 - the build stage's key holds no data, so it may not read it
    quantize = next(s for s in STAGES if s.name == "quantize")
    assert stage_view(cfg, quantize.sections(plan)).verify.max_accuracy_drop == 0.5


def _key(stage_name: str, *overrides: str) -> dict:
    from compiler.pipeline import STAGES, stage_key_parts
    from compiler.plan import resolve

    cfg = recipe_cfg("cnn_torch", *overrides)
    return stage_key_parts(next(s for s in STAGES if s.name == stage_name), cfg, resolve(cfg))


def test_a_changed_data_seed_rebuilds_a_calibrated_engine_only():
    calibrated = ["engine.backend=tensorrt", "engine.tensorrt.version=10", "engine.tensorrt.strongly_typed=false",
                  "engine.precision=int8", "engine.tensorrt.calibration_cache=calib.cache"]
    assert _key("build", *calibrated, "seed=0") != _key("build", *calibrated, "seed=1")
    assert _key("build", *calibrated, "data.calibration_size=64") != _key("build", *calibrated)
    # a Q/DQ model carries its calibration: the build reads no data, and its key holds none
    qdq = ["engine.backend=tensorrt", "engine.precision=int8"]
    assert _key("build", *qdq, "seed=0") == _key("build", *qdq, "seed=1")
    assert _key("quantize", *qdq, "seed=0") != _key("quantize", *qdq, "seed=1")


def test_engine_flags_alone_reuse_the_conversion_but_not_the_build():
    base = ["engine.backend=tensorrt", "engine.precision=int8"]
    assert _key("quantize", *base) == _key("quantize", *base, "engine.tensorrt.builder_optimization_level=5")
    assert _key("build", *base) != _key("build", *base, "engine.tensorrt.builder_optimization_level=5")
    assert _key("build", *base) == _key("build", *base, "engine.onnxruntime.intra_op_threads=3")  # other backend
    assert _key("quantize", *base) != _key("quantize", *base, "quantize.tool=onnxruntime")


def test_a_changed_verify_atol_changes_the_reports_reproducer(compile_cli):
    first = compile_cli("recipe=cnn_torch", *TINY, "verify.atol=1e-4")
    second = compile_cli("recipe=cnn_torch", *TINY, "verify.atol=1e-3")
    assert first.code == 0 and second.code == 0, second.output
    assert second.report["stages"]["build"]["cached"]  # the build is the same engine...
    assert "--atol 0.0001" in first.report["engine"]["reproducers"]["polygraphy_run"]
    assert "--atol 0.001 " in second.report["engine"]["reproducers"]["polygraphy_run"]  # ...the reproducer is now's


@pytest.mark.parametrize("recipe", ["cnn_torch", "resnet_torch"])
def test_modelopt_conversions_are_verified_against_fp32_in_the_ledger(compile_cli, recipe):
    for precision in ("fp16", "int8"):  # one cache: the second conversion reuses the trained, cleaned model
        run = compile_cli(f"recipe={recipe}", *TINY[:-2], "data.limit=600", "train.epochs=2", "quantize.tool=modelopt",
                          f"engine.precision={precision}", "verify.max_accuracy_drop=1.0")
        assert run.code == 0, run.output
        r = run.report
        assert r["quantize"]["tool"] == "modelopt" and r["engine"]["plan"]["conversion"] == precision
        converted = f"model.{precision}.onnx"
        assert any(row["candidate"] == converted for row in r["ledger"])  # the ModelOpt model is run in the ledger
        acc = r["metrics"]["accuracy"]
        assert (acc["fp32"] - acc["engine"]) * 100 <= 1.0 and acc["fp32"] > 0.3
        graph = onnx.load(str(run.run_dir / converted))
        if precision == "int8":
            assert sum(n.op_type == "QuantizeLinear" for n in graph.graph.node) == \
                r["quantize"]["quantize_linear_nodes"] > 0
        else:
            assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)


@pytest.fixture(scope="module")
def clean_cnn(tmp_path_factory):
    """A trained cnn_torch model.clean.onnx and calibration samples from its data."""
    import os
    import sys

    folder = tmp_path_factory.mktemp("clean")
    env = {**os.environ, "COMPILER_CACHE_DIR": str(folder / "cache")}
    subprocess.run([sys.executable, "-m", "compiler", "recipe=cnn_torch", *TINY, f"hydra.run.dir={folder / 'run'}"],
                   cwd=folder, env=env, check=True, capture_output=True)
    from omegaconf import OmegaConf

    from compiler.data.sources import load_dataset
    from compiler.iospec import IOSpec

    cfg = recipe_cfg("cnn_torch", "data.limit=240")
    io = IOSpec.from_cfg(cfg)
    samples = io.to_engine(load_dataset(cfg.data, io, 0).calibration(64))
    return folder / "run" / "model.clean.onnx", samples, OmegaConf.structured(cfg.quantize)


def test_modelopt_fp8_is_qdq_of_float8_types(clean_cnn, tmp_path):
    from compiler.stages.modelopt_convert import convert

    clean, samples, qcfg = clean_cnn
    out = tmp_path / "model.fp8.onnx"
    convert(clean, out, "fp8", [], samples, qcfg, "fp16", tmp_path)
    graph = onnx.load(str(out)).graph
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    convs = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(quantize) >= 1 and len(quantize) <= 2 * len(convs)
    zero_points = {n.input[2] for n in quantize if len(n.input) > 2}
    types = {i.data_type for i in graph.initializer if i.name in zero_points}
    assert types == {onnx.TensorProto.FLOAT8E4M3FN}


def test_modelopt_bf16_converts_and_onnxruntime_cpu_refuses_it(clean_cnn, tmp_path):
    """bf16 is checked where onnxruntime's CPU provider can run it; for Conv it cannot, so the conversion is
    checked structurally and the quantize stage reports the accuracy as not measured (the engine's is the gate)."""
    import onnxruntime as ort

    from compiler.stages.modelopt_convert import convert

    clean, samples, qcfg = clean_cnn
    out = tmp_path / "model.bf16.onnx"
    convert(clean, out, "bf16", [], samples, qcfg, "fp16", tmp_path)
    graph = onnx.load(str(out)).graph
    assert any(i.data_type == onnx.TensorProto.BFLOAT16 for i in graph.initializer)
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.FLOAT]  # IO types kept
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_modelopt_keeps_excluded_nodes_fp32(clean_cnn, tmp_path):
    from compiler.stages.modelopt_convert import convert

    clean, samples, qcfg = clean_cnn
    first_conv = next(n.name for n in onnx.load(str(clean)).graph.node if n.op_type == "Conv")
    out = tmp_path / "model.int8.onnx"
    convert(clean, out, "int8", [first_conv], samples, qcfg, "fp32", tmp_path)
    graph = onnx.load(str(out)).graph
    producers = {o: n for n in graph.node for o in n.output}
    conv = next(n for n in graph.node if n.name == first_conv)
    assert producers.get(conv.input[1]) is None or producers[conv.input[1]].op_type != "DequantizeLinear"
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)  # the rest is quantized


def test_precision_best_builds_every_candidate_and_keeps_the_fastest_within_budget(compile_cli):
    run = compile_cli("recipe=cnn_torch", *TINY[:-2], "data.limit=600", "train.epochs=2",
                      "engine.precision=best", "verify.max_accuracy_drop=2.0")
    assert run.code == 0, run.output
    rows = run.report["search"]
    assert [r["precision"] for r in rows] == ["fp32", "int8"]
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["passed"]
    assert chosen[0]["speed_ms"] == min(r["speed_ms"] for r in rows if r["passed"])
    assert run.report["engine"]["plan"]["precision"] == chosen[0]["precision"]
    assert (run.run_dir / "candidates" / "int8" / "model.int8.onnx").is_file()
    text = (run.run_dir / "report.md").read_text()
    assert "## precision: best" in text and f"**{chosen[0]['precision']}**" in text


def test_intra_op_threads_auto_times_each_count_and_keeps_the_fastest(compile_cli):
    run = compile_cli("recipe=cnn_torch", *TINY, "engine.onnxruntime.intra_op_threads=auto")
    assert run.code == 0, run.output
    threads = run.report["latency_conditions"]["intra_op_threads"]
    import os

    assert [r["intra_op_threads"] for r in threads["table"]] == sorted({1 << i for i in range(8)
                                                                        if 1 << i < os.cpu_count()} | {os.cpu_count()})
    assert threads["chosen"] == min(threads["table"], key=lambda r: r["p50_ms"])["intra_op_threads"]
    assert re.search(r"kept \*\*\d+\*\*", (run.run_dir / "report.md").read_text())
