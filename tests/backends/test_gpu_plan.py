"""The GPU path's mapping, table-tested on the CPU: which backend, providers, provider options and math mode each
precision gets on each kind of machine, what `best` searches, and what lint refuses. No GPU needed: the machine is
described to the plan (a CUDA GPU of a compute capability, onnxruntime-gpu installed, TensorRT importable or not).
Tests that need a real GPU are in test_gpu.py (marked `gpu`)."""

import pytest

from compiler import plan as plan_module
from compiler.backends import providers as providers_module
from compiler.numerics import STRICT_FP32, MathMode, for_precision
from tests.conftest import recipe_cfg


@pytest.fixture
def machine(monkeypatch):
    """machine(gpu=..., cc=..., ort_gpu=..., tensorrt=...): what the plan sees of this machine."""
    def describe(gpu: bool = True, cc: str | None = "9.0", ort_gpu: bool = True, tensorrt: bool = False):
        monkeypatch.setattr(plan_module, "has_cuda_gpu", lambda: gpu)
        monkeypatch.setattr(plan_module, "compute_capability", lambda: cc if gpu else None)
        monkeypatch.setattr(providers_module, "gpu_onnxruntime", lambda: ort_gpu)
        monkeypatch.setattr(plan_module, "tensorrt_status", lambda: (True, "tensorrt 11.4.0 is importable and a CUDA "
                                                                     "GPU is present") if tensorrt else (False, "absent"))
        monkeypatch.setattr(plan_module, "builder_status", lambda backend="tensorrt": (tensorrt, "absent"))
    return describe


CPU = dict(gpu=False, ort_gpu=False)
ORT_GPU = dict(gpu=True, ort_gpu=True)
TRT = dict(gpu=True, ort_gpu=True, tensorrt=True)
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]

# (machine, overrides) -> (backend, providers, engine math mode, CUDA provider's use_tf32, reduced_at)
CASES = [
    (CPU, [], ("onnxruntime", ["CPUExecutionProvider"], "strict fp32", None, None)),
    (dict(gpu=True, ort_gpu=False), [], ("onnxruntime", ["CPUExecutionProvider"], "strict fp32", None, None)),
    (ORT_GPU, [], ("onnxruntime", CUDA, "strict fp32", "0", None)),
    (ORT_GPU, ["engine.precision=tf32"], ("onnxruntime", CUDA, "tf32", "1", "engine")),
    (ORT_GPU, ["engine.precision=fp16"], ("onnxruntime", CUDA, "strict fp32", "0", "conversion")),
    (ORT_GPU, ["engine.onnxruntime.providers=[cpu]"], ("onnxruntime", ["CPUExecutionProvider"], "strict fp32", None,
                                                        None)),
    (ORT_GPU, ["engine.onnxruntime.providers=[cuda,cpu]"], ("onnxruntime", CUDA, "strict fp32", "0", None)),
    (TRT, [], ("tensorrt", CUDA, "strict fp32", "0", None)),
    (TRT, ["engine.precision=tf32"], ("tensorrt", CUDA, "tf32", "1", "engine")),
]


@pytest.mark.parametrize("where, overrides, expected", CASES, ids=lambda c: str(c)[:50])
def test_each_machine_and_precision_gets_its_backend_providers_and_math_mode(machine, where, overrides, expected):
    machine(**where)
    p = plan_module.resolve(recipe_cfg("cnn_torch", *overrides))
    backend, providers, mode, use_tf32, reduced = expected
    assert (p.backend, p.providers, p.math_mode.name, p.reduced_at) == (backend, providers, mode, reduced)
    entries = providers_module.with_options(p.providers, p.onnxruntime["cuda_options"], p.math_mode)
    cuda = [options for entry in entries if isinstance(entry, tuple) for name, options in [entry]]
    assert (cuda[0]["use_tf32"] if cuda else None) == use_tf32
    assert p.gpu == (backend == "tensorrt" or "CUDAExecutionProvider" in providers)
    if backend == "onnxruntime":  # the plan says where and why
        asked = any("providers" in o for o in overrides)
        assert ("on the CUDA provider" in p.reason) == ("CUDAExecutionProvider" in providers and not asked)
        assert ("(engine.onnxruntime.providers)" in p.reason) == asked


def test_references_run_in_strict_fp32_whatever_the_engine_precision(machine):
    machine(**ORT_GPU)
    for precision in ("fp32", "tf32", "fp16", "int8"):
        p = plan_module.resolve(recipe_cfg("cnn_torch", f"engine.precision={precision}"))
        reference = providers_module.with_options(p.providers, {}, STRICT_FP32)
        assert reference[0] == ("CUDAExecutionProvider", {"use_tf32": "0"})
    assert for_precision("tf32") == MathMode(tf32=True) and for_precision("fp16") == STRICT_FP32


def test_tensorrt_tf32_flag_follows_the_precision(machine):
    from compiler.backends.tensorrt_plan import build_args, trtexec_command

    machine(**TRT)
    for precision, flag in (("fp32", False), ("tf32", True), ("fp16", False)):
        p = plan_module.resolve(recipe_cfg("cnn_torch", f"engine.precision={precision}", "engine.tensorrt.timing_cache=null"))
        b = build_args(p, [], "m.onnx", "m.engine")
        assert b.config["tf32"] is flag
        assert ("--noTF32" in trtexec_command(b, p)) is not flag


@pytest.mark.parametrize("where, cc, overrides, space", [
    (CPU, None, [], ("fp32", "int8")),
    (ORT_GPU, "9.0", [], ("fp32", "tf32", "fp16", "bf16", "int8")),
    (ORT_GPU, "7.5", [], ("fp32", "fp16", "int8")),
    (ORT_GPU, "9.0", ["engine.onnxruntime.providers=[cpu]"], ("fp32", "int8")),
    (TRT, "9.0", [], ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")),
    (TRT, "8.6", [], ("fp32", "tf32", "fp16", "bf16", "int8")),
])
def test_best_searches_what_runs_on_this_machine(machine, where, cc, overrides, space):
    machine(**{**where, "cc": cc})
    p = plan_module.resolve(recipe_cfg("resnet_torch", "engine.precision=best", *overrides))
    assert p.search == space
    assert p.with_precision("bf16").tool == "modelopt"   # bf16: only ModelOpt writes it
    assert p.with_precision("tf32").conversion == "none" and p.with_precision("tf32").math_mode.tf32


@pytest.mark.parametrize("where, overrides, key, words", [
    (CPU, ["engine.onnxruntime.providers=[CudaExecutionProvidr]"], "engine.onnxruntime.providers[0]",
     "did you mean 'cuda'?"),
    (CPU, ["engine.onnxruntime.providers=[cuda]"], "engine.onnxruntime.providers[0]", "needs onnxruntime-gpu"),
    (dict(gpu=False, ort_gpu=True), ["engine.onnxruntime.providers=[cuda,cpu]"], "engine.onnxruntime.providers[0]",
     "needs a CUDA GPU"),
    (CPU, ["engine.precision=tf32"], "engine.precision", "does not build tf32 engines on the CPU"),
    (dict(ORT_GPU, cc="7.5"), ["engine.precision=tf32"], "engine.precision", "compute capability 8.0 or more"),
    (ORT_GPU, ["engine.backend=tensorrt_rtx"], "engine.backend", "compute capability 9.0); it runs compute "
     "capabilities 8.0, 8.6, 8.9, 12.0, 12.1 and above 12.1"),
    (TRT, ["engine.tensorrt.tf32=true"], "engine.tensorrt.tf32", "TF32 is a reduced precision"),
    (ORT_GPU, ["+engine.onnxruntime.cuda_options.use_tf32=1"], "engine.onnxruntime.cuda_options.use_tf32",
     "TF32 follows engine.precision"),
    (ORT_GPU, ["engine.onnxruntime.providers=[cuda,CUDAExecutionProvider]"], "engine.onnxruntime.providers",
     "listed twice"),
])
def test_lint_refuses_what_cannot_run_here(machine, where, overrides, key, words):
    from compiler.lint import lint

    machine(**where)
    problems = lint(recipe_cfg("cnn_torch", *overrides))
    assert any(p.path == key and words in str(p) for p in problems), [str(p) for p in problems]


def test_rtx_on_a_gpu_its_runtime_runs_is_not_refused_for_the_gpu(machine):
    from compiler.lint import lint

    machine(**{**ORT_GPU, "cc": "8.9"})
    problems = [str(p) for p in lint(recipe_cfg("cnn_torch", "engine.backend=tensorrt_rtx"))]
    assert problems and not any("compute capability" in p for p in problems), problems  # not installed, though
    assert plan_module.rtx_runs_on("12.0") and plan_module.rtx_runs_on("13.0") and not plan_module.rtx_runs_on("9.0")


@pytest.mark.parametrize("where", [CPU, ORT_GPU])
@pytest.mark.parametrize("precision", ["fp16", "int8", "best"])
def test_reduced_precision_without_labels_lints(machine, where, precision, tmp_path):
    """No labels (onnx_file, data.source=none): the agreement gate judges; lint no longer asks for data."""
    import onnx
    from onnx import TensorProto, helper

    from compiler.lint import lint
    from compiler.onnx_io import resolve_onnx_io

    machine(**where)
    path = tmp_path / "m.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    cfg = recipe_cfg("onnx_file", f"model.path={path}", f"engine.precision={precision}")
    assert resolve_onnx_io(cfg)[0] == []
    assert lint(cfg) == []


# --- the CUDA provider's runtime settings: fusion, layout, CUDA graphs, the surgery list (EnginePlan) ----------

@pytest.mark.parametrize("where, overrides, expected", [
    # (machine, overrides) -> (fusion, layout, cuda_graph, surgery skips, label)
    (CPU, ["engine.precision=fp16"], (False, "auto", False, {}, "fp16")),
    (ORT_GPU, [], (False, "auto", False, {"skip": ["fuse_parallel_matmuls"]}, "fp32")),
    (ORT_GPU, ["engine.precision=fp16"], (True, "auto", False, {"skip": ["fuse_parallel_matmuls"]}, "fp16")),
    (ORT_GPU, ["engine.precision=fp16", "engine.onnxruntime.fusion=false"],
     (False, "auto", False, {"skip": ["fuse_parallel_matmuls"]}, "fp16+unfused")),
    (ORT_GPU, ["engine.precision=fp16", "engine.onnxruntime.layout=nchw", "engine.onnxruntime.cuda_graph=true"],
     (True, "nchw", True, {"skip": ["fuse_parallel_matmuls"]}, "fp16+nchw+graph")),
    (ORT_GPU, ["engine.onnxruntime.providers=[cpu]", "engine.precision=fp16"], (False, "auto", False, {}, "fp16")),
    (TRT, ["engine.precision=fp16"], (False, "auto", False, {}, "fp16")),
])
def test_the_cuda_providers_runtime_settings_are_decided_in_the_plan(machine, where, overrides, expected):
    machine(**where)
    p = plan_module.resolve(recipe_cfg("cnn_torch", *overrides))
    assert (p.fusion, p.layout, p.cuda_graph, p.surgery_key(), p.label) == expected
    assert p.build_key().get("cuda_graph", False) == p.cuda_graph  # the runtime settings are part of the engine


def test_best_searches_layout_graphs_and_fusion_of_a_passing_candidate(machine):
    machine(**ORT_GPU)
    fp16 = plan_module.resolve(recipe_cfg("cnn_torch", "engine.precision=best")).with_precision("fp16")
    assert [v.label for v in fp16.layout_variants(True, running="nhwc")] == ["fp16+nchw"]  # a conv net
    assert [v.label for v in fp16.layout_variants(True, running="nchw")] == ["fp16+nhwc"]  # a ViT's patch conv
    assert fp16.layout_variants(has_convolutions=False) == []
    nchw = fp16.layout_variants(True, running="nhwc")[0]
    assert nchw.graph_variant(graph_capturable=True).label == "fp16+nchw+graph"
    assert nchw.graph_variant(graph_capturable=False) is None  # its own placement has a host copy
    assert nchw.graph_variant(True).graph_variant(True) is None  # already captured
    assert fp16.unfused_variant().label == "fp16+unfused"
    fp32 = fp16.with_precision("fp32")
    assert fp32.graph_variant(graph_capturable=True).label == "fp32+graph" and fp32.unfused_variant() is None
    machine(**CPU)
    cpu = plan_module.resolve(recipe_cfg("cnn_torch", "engine.precision=best")).with_precision("int8")
    assert cpu.layout_variants(True) == [] and cpu.graph_variant(True) is None and cpu.unfused_variant() is None


def test_tf32_and_fp32_share_a_graph_but_not_an_engine(machine):
    """The math mode is part of the runtime settings written beside the engine: a tf32 candidate must not take
    the fp32 candidate's cached engine (it did, and timed exactly like fp32: ResNet-50 26.04 ms against 26.04)."""
    machine(**ORT_GPU)
    fp32 = plan_module.resolve(recipe_cfg("cnn_torch", "engine.precision=best")).with_precision("fp32")
    tf32 = fp32.with_precision("tf32")
    assert fp32.conversion_key() == tf32.conversion_key()
    assert fp32.build_key() != tf32.build_key()
    assert (fp32.build_key()["math_mode"], tf32.build_key()["math_mode"]) == ("strict fp32", "tf32")


@pytest.mark.parametrize("overrides, key", [
    (["engine.onnxruntime.cuda_graph=true"], "engine.onnxruntime.cuda_graph"),
    (["engine.onnxruntime.layout=nhwc"], "engine.onnxruntime.layout"),
    (["engine.onnxruntime.fusion=true"], "engine.onnxruntime.fusion"),
])
def test_runtime_settings_where_they_cannot_apply_are_refused(machine, overrides, key):
    machine(**CPU)
    problems = plan_module.plan_problems(recipe_cfg("cnn_torch", *overrides))
    assert [p.path for p in problems] == [key] and problems[0].fix


def _file_with(tmp_path, nodes, opset=17, extra_opsets=()):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    *(helper.make_opsetid(d, v) for d, v in extra_opsets)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("backend", ["tensorrt", "tensorrt_rtx"])
def test_tensorrt_lint_names_the_ops_its_parser_refuses_before_any_work(machine, tmp_path, backend, monkeypatch):
    from onnx import helper

    machine(**TRT)
    monkeypatch.setattr(plan_module, "_builder_problems", lambda requested: [])
    path = _file_with(tmp_path, [helper.make_node("FusedMatMul", ["x", "x"], ["m"], domain="com.microsoft"),
                                 helper.make_node("MatMulInteger", ["m", "m"], ["i"]),
                                 helper.make_node("Identity", ["m"], ["y"])], extra_opsets=[("com.microsoft", 1)])
    problems = plan_module.plan_problems(recipe_cfg("onnx_file", f"model.path={path}", f"engine.backend={backend}"))
    refused = {p.message: (p.value, p.fix) for p in problems if p.path == "model.path"}
    name = "TensorRT-RTX" if backend == "tensorrt_rtx" else "TensorRT 11"
    assert refused[f"{name}'s ONNX parser does not import onnxruntime contrib ops (com.microsoft)"][0] == ["FusedMatMul"]
    value, fix = refused[f"{name}'s ONNX parser does not import dynamic quantization"]
    assert value == ["MatMulInteger"] and "engine.backend=onnxruntime" in fix


def test_the_tensorrt_import_table_by_kind_and_version():
    from compiler.backends.tensorrt_ops import REFUSED, kind_of

    assert kind_of("QLinearConv", "", 13) == "QOperator int8"
    assert kind_of("TreeEnsembleClassifier", "ai.onnx.ml", 17) == "ai.onnx.ml ops"
    assert kind_of("Attention", "", 23) == "opset-23 Attention" and kind_of("Attention", "", 17) is None
    assert kind_of("Conv", "", 17) is None and kind_of("QuantizeLinear", "", 17) is None  # Q/DQ is TensorRT's int8
    assert set(REFUSED) == {10, 11}


def test_onnxruntime_engines_take_what_tensorrt_refuses(machine, tmp_path):
    from onnx import helper

    machine(**ORT_GPU)
    path = _file_with(tmp_path, [helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft")],
                      extra_opsets=[("com.microsoft", 1)])
    assert not [p for p in plan_module.plan_problems(recipe_cfg("onnx_file", f"model.path={path}"))
                if p.path == "model.path"]


def test_the_math_mode_sets_the_loaded_frameworks_tf32_globals_and_restores_them():
    import torch

    from compiler.frameworks import in_math_mode

    torch.backends.cudnn.allow_tf32 = True     # torch's own default for cuDNN: TF32 on
    torch.set_float32_matmul_precision("high")
    with in_math_mode(STRICT_FP32):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"
        with in_math_mode(MathMode(tf32=True)):
            assert torch.backends.cudnn.allow_tf32 and torch.get_float32_matmul_precision() == "high"
        assert not torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.allow_tf32 and torch.get_float32_matmul_precision() == "high"
    torch.set_float32_matmul_precision("highest")


def _outcome(passed: bool):
    from compiler.pipeline import StageRecord

    return None, [StageRecord("verify", info={"passed": passed})], None


def test_runtime_variants_go_to_the_passing_precisions_within_reach_of_the_fastest():
    from compiler.pipeline import VARIANT_REACH, _within_reach

    outcomes = {"fp32": _outcome(True), "tf32": _outcome(True), "fp16": _outcome(True), "int8": _outcome(False),
                "bf16": _outcome(True)}
    latency = {"fp32": {"b1": {"p50": 1.0}, "b64": {"p50": 20.2}}, "tf32": {"b64": {"p50": 19.9}},
               "fp16": {"b1": {"p50": 2.0}, "b64": {"p50": 10.0}}, "int8": {"b64": {"p50": 1.0}}, "bf16": {}}
    assert VARIANT_REACH == 2.0
    # the largest batch decides; int8 failed its gate; bf16 was not timed and keeps its variants
    assert _within_reach(outcomes, latency) == {"tf32", "fp16", "bf16"}
    assert _within_reach(outcomes, {}) == {"fp32", "tf32", "fp16", "bf16"}  # nothing timed: every passing one


def test_variants_are_built_per_layout_from_that_layouts_own_placement(machine, tmp_path):
    """A ViT-like file (one patch convolution) runs NCHW under `auto`: its other layout is NHWC, and where NHWC puts
    copies on the host only the NCHW engine gets CUDA graphs. Nothing fused: no `+unfused` twin of the same engine."""
    from compiler.pipeline import StageRecord, _build_variants
    from tests.backends.test_engine_runtime import _convolutions

    machine(**ORT_GPU)
    engine = tmp_path / "model.opt.onnx"
    _convolutions(engine, 1)
    fp16 = plan_module.resolve(recipe_cfg("cnn_torch", "engine.precision=best")).with_precision("fp16")
    placements = {"fp16": {"memcpy": 0, "by_provider": {"CUDAExecutionProvider": 9}},
                  "fp16+nhwc": {"memcpy": 2, "by_provider": {"CUDAExecutionProvider": 9}}}

    def outcome(label: str, fused: dict) -> tuple:
        return None, [StageRecord("quantize", info={"fused_for_gpu": {"fused_operators": fused}}),
                      StageRecord("build", path=str(engine)),
                      StageRecord("verify", info={"passed": True, "placement": placements.get(label, {})})], None

    for fused, unfused in (({}, []), ({"Attention": 12}, ["fp16+unfused"])):
        outcomes, built = {"fp16": outcome("fp16", fused)}, []

        def build(plan):
            built.append(plan.label)
            outcomes[plan.label] = outcome(plan.label, fused)

        _build_variants(fp16, outcomes, build)
        assert built == ["fp16+nhwc", "fp16+graph", *unfused]


def test_the_fp16_conversion_for_the_cuda_provider_checks_its_fusion_on_calibration_inputs(machine, tmp_path):
    """The quantize stage of an fp16 CUDA engine (the machine described, the stages run here on the CPU): it fuses,
    and the fused graph is run beside the exported one on the first calibration inputs before it is converted."""
    import logging

    from compiler.iospec import IOSpec
    from compiler.pipeline import STAGES, _stages
    from tests.conftest import TINY

    machine(**ORT_GPU)
    cfg = recipe_cfg("transformer_torch", *TINY, "engine.precision=fp16")
    plan = plan_module.resolve(cfg)
    assert plan.fusion and plan.cuda_provider
    records = []
    error = _stages(cfg, IOSpec.from_cfg(cfg), plan, None,
                    [s for s in STAGES if s.name in ("train", "export", "surgery", "quantize")], records, tmp_path,
                    logging.getLogger("test"))
    assert error is None
    fused = next(r.info["fused_for_gpu"] for r in records if r.name == "quantize")
    assert fused["fused_operators"] == {"Attention": 2, "SkipLayerNormalization": 4}
    assert "fusion_rejected" not in fused
    assert fused["fusion_checked_on"] == "4 calibration inputs, CPU provider, against the exported graph"
