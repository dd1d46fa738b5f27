"""Every TensorRT field of the recipe: its effect on the Polygraphy loaders and on the reproducers.

These run without TensorRT. Real engine builds are in test_tensorrt_engine.py (marked `tensorrt`).
"""

import pytest

from compiler.backends.tensorrt_plan import (TrtEnum, plan, polygraphy_convert_command, polygraphy_run_command,
                                             trtexec_command)
from tests.conftest import recipe_cfg

SHAPES = ["--minShapes=input:1x1x28x28", "--optShapes=input:32x1x28x28", "--maxShapes=input:64x1x28x28"]

# (overrides, expected CreateConfig/NetworkFromOnnxPath kwargs, trtexec flags, polygraphy flags)
CASES = [
    ([], {"tf32": True}, [], ["--tf32"]),
    (["engine.precision=fp16"], {"fp16": True}, ["--fp16"], ["--fp16"]),
    (["engine.precision=bf16"], {"bf16": True}, ["--bf16"], ["--bf16"]),
    (["engine.precision=fp8"], {"fp8": True}, ["--fp8"], ["--fp8"]),
    (["engine.precision=best"], {"fp16": True, "bf16": True, "int8": True}, ["--best"], ["--fp16", "--bf16", "--int8"]),
    (["engine.precision=int8"], {"int8": True}, ["--int8", "--calib=calibration.cache"],
     ["--calibration-cache", "calibration.cache"]),
    (["engine.tensorrt.strongly_typed=true"], {"network.strongly_typed": True}, ["--stronglyTyped"], ["--strongly-typed"]),
    (["engine.tensorrt.tf32=false"], {"tf32": False}, ["--noTF32"], []),
    (["engine.tensorrt.workspace_mib=1024"], {"memory_pool_limits": {TrtEnum("MemoryPoolType", "WORKSPACE"): 1 << 30}},
     ["--memPoolSize=workspace:1024M"], ["--pool-limit", "workspace:1024M"]),
    (["engine.tensorrt.builder_optimization_level=5"], {"builder_optimization_level": 5},
     ["--builderOptimizationLevel=5"], ["--builder-optimization-level", "5"]),
    (["engine.tensorrt.timing_cache=/tmp/t.cache"], {"load_timing_cache": "/tmp/t.cache"},
     ["--timingCacheFile=/tmp/t.cache"], ["--load-timing-cache", "/tmp/t.cache", "--save-timing-cache", "/tmp/t.cache"]),
    (["engine.tensorrt.tactic_sources=[cublas,cudnn]"],
     {"tactic_sources": [TrtEnum("TacticSource", "CUBLAS"), TrtEnum("TacticSource", "CUDNN")]},
     ["--tacticSources=+CUBLAS,-CUBLAS_LT,+CUDNN,-EDGE_MASK_CONVOLUTIONS,-JIT_CONVOLUTIONS"],
     ["--tactic-sources", "CUBLAS", "CUDNN"]),
    (["engine.tensorrt.precision_constraints=obey"], {"precision_constraints": "obey"},
     ["--precisionConstraints=obey"], ["--precision-constraints", "obey"]),
    (["engine.tensorrt.precision_constraints=obey", "+engine.tensorrt.layer_precisions.conv*=fp32"],
     {"layer_precisions": {"conv*": "fp32"}, "precision_constraints": "obey"}, ["--layerPrecisions=conv*:fp32"], ["--layer-precisions", "conv*:float32"]),
    (["engine.tensorrt.sparsity=true"], {"sparse_weights": True}, ["--sparsity=enable"], ["--sparse-weights"]),
    (["engine.tensorrt.version_compatible=true"], {"version_compatible": True}, ["--versionCompatible"],
     ["--version-compatible"]),
    (["engine.tensorrt.hardware_compatibility=ampere_plus"],
     {"hardware_compatibility_level": TrtEnum("HardwareCompatibilityLevel", "AMPERE_PLUS")},
     ["--hardwareCompatibilityLevel=ampere+"], ["--hardware-compatibility-level", "ampere_plus"]),
    (["engine.tensorrt.dla_core=1"], {"use_dla": True, "allow_gpu_fallback": True},
     ["--useDLACore=1", "--allowGPUFallback"], ["--use-dla", "--allow-gpu-fallback"]),
    (["engine.tensorrt.max_aux_streams=2"], {"max_aux_streams": 2}, ["--maxAuxStreams=2"], ["--max-aux-streams", "2"]),
    (["engine.tensorrt.profiling_verbosity=detailed"],
     {"profiling_verbosity": TrtEnum("ProfilingVerbosity", "DETAILED")},
     ["--profilingVerbosity=detailed"], ["--profiling-verbosity", "detailed"]),
    (["engine.tensorrt.refittable=true"], {"refittable": True}, ["--refit"], ["--refittable"]),
    (["engine.tensorrt.calibration_cache=/tmp/c.cache", "engine.precision=int8"], {"calibration_cache": "/tmp/c.cache", "int8": True},
     ["--calib=/tmp/c.cache"], ["--calibration-cache", "/tmp/c.cache"]),
]


def _plan(*overrides):
    cfg = recipe_cfg("cnn_torch", "engine.tensorrt.timing_cache=null", *overrides)
    return plan(cfg, "model.clean.onnx", "model.engine"), cfg


def _contains(haystack, needle):
    return any(haystack[i:i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


@pytest.mark.parametrize("overrides, expected, trtexec, poly", CASES, ids=lambda c: str(c)[:50])
def test_field_maps_to_one_place(overrides, expected, trtexec, poly):
    p, cfg = _plan(*overrides)
    for key, value in expected.items():
        if key.startswith("network."):
            assert p.network[key.split(".", 1)[1]] == value
        elif key in ("layer_precisions", "calibration_cache"):
            assert getattr(p, key) == value
        else:
            assert p.config[key] == value, key
    baseline, _ = _plan()
    changed = {k for k in set(p.config) | set(baseline.config) if p.config.get(k) != baseline.config.get(k)}
    assert changed <= set(expected) | {"tf32"}, f"{overrides} changed more than its own flags: {changed}"

    assert trtexec_command(p, cfg)[:3] == ["trtexec", "--onnx=model.clean.onnx", "--saveEngine=model.engine"]
    for flag in trtexec:
        assert flag in trtexec_command(p, cfg), flag
    assert _contains(polygraphy_convert_command(p, cfg), poly)
    assert _contains(polygraphy_run_command(p, cfg), poly)


def test_default_plan_exact_commands():
    p, cfg = _plan()
    assert trtexec_command(p, cfg) == ["trtexec", "--onnx=model.clean.onnx", "--saveEngine=model.engine", *SHAPES]
    assert polygraphy_convert_command(p, cfg) == [
        "polygraphy", "convert", "model.clean.onnx", "-o", "model.engine", "--tf32",
        "--trt-min-shapes", "input:[1,1,28,28]", "--trt-opt-shapes", "input:[32,1,28,28]",
        "--trt-max-shapes", "input:[64,1,28,28]"]
    assert polygraphy_run_command(p, cfg)[-4:] == ["--atol", "0.0001", "--rtol", "0.001"]
    assert polygraphy_run_command(p, cfg)[:5] == ["polygraphy", "run", "model.clean.onnx", "--trt", "--onnxrt"]


def test_profiles_are_derived_from_the_io_spec_and_its_dims():
    p, _ = _plan("model.dims.batch=[2,4,16]")
    assert p.profiles == [{"input": ([2, 1, 28, 28], [4, 1, 28, 28], [16, 1, 28, 28])}]
    p, _ = _plan("model.inputs=[{name: input, shape: [1, 1, 28, 28]}]")  # a fixed batch
    assert p.profiles == [{"input": ([1, 1, 28, 28], [1, 1, 28, 28], [1, 1, 28, 28])}]


def test_several_explicit_profiles():
    shapes = "[{input: {min: [1,1,28,28], opt: [1,1,28,28], max: [4,1,28,28]}}, " \
             "{input: {min: [8,1,28,28], opt: [16,1,28,28], max: [32,1,28,28]}}]"
    p, cfg = _plan(f"model.profiles={shapes}")
    assert len(p.profiles) == 2 and p.profiles[1]["input"][2] == [32, 1, 28, 28]
    cmd = trtexec_command(p, cfg)
    assert "--profile=1" in cmd and "--maxShapes=input:32x1x28x28" in cmd
    assert polygraphy_convert_command(p, cfg).count("--trt-max-shapes") == 2


# (profile overrides, expected Polygraphy profiles, expected trtexec shape flags) for bert_torch's two int64 inputs
BERT_PROFILES = [
    ([], [{"input_ids": ([1, 8], [16, 32], [32, 64]), "attention_mask": ([1, 8], [16, 32], [32, 64])},
          {"input_ids": ([1, 64], [16, 96], [32, 128]), "attention_mask": ([1, 64], [16, 96], [32, 128])}],
     ["--minShapes=input_ids:1x8,attention_mask:1x8", "--optShapes=input_ids:16x32,attention_mask:16x32",
      "--maxShapes=input_ids:32x64,attention_mask:32x64", "--profile=1",
      "--minShapes=input_ids:1x64,attention_mask:1x64", "--optShapes=input_ids:16x96,attention_mask:16x96",
      "--maxShapes=input_ids:32x128,attention_mask:32x128"]),
    (["model.profiles=[]", "model.dims.batch=[1,8,32]", "model.dims.seq=[8,64,256]"],
     [{"input_ids": ([1, 8], [8, 64], [32, 256]), "attention_mask": ([1, 8], [8, 64], [32, 256])}],
     ["--minShapes=input_ids:1x8,attention_mask:1x8", "--optShapes=input_ids:8x64,attention_mask:8x64",
      "--maxShapes=input_ids:32x256,attention_mask:32x256"]),
    (["model.profiles=[{batch: [1,1,1]}, {seq: [128,128,128]}]"],
     [{"input_ids": ([1, 8], [1, 32], [1, 64]), "attention_mask": ([1, 8], [1, 32], [1, 64])},
      {"input_ids": ([1, 128], [16, 128], [32, 128]), "attention_mask": ([1, 128], [16, 128], [32, 128])}],
     ["--minShapes=input_ids:1x8,attention_mask:1x8", "--optShapes=input_ids:1x32,attention_mask:1x32",
      "--maxShapes=input_ids:1x64,attention_mask:1x64", "--profile=1",
      "--minShapes=input_ids:1x128,attention_mask:1x128", "--optShapes=input_ids:16x128,attention_mask:16x128",
      "--maxShapes=input_ids:32x128,attention_mask:32x128"]),
    (["model.profiles=[{input_ids: {min: [1,4], opt: [2,16], max: [4,32]}, seq: [4,16,32]}]"],
     [{"input_ids": ([1, 4], [2, 16], [4, 32]), "attention_mask": ([1, 4], [16, 16], [32, 32])}],
     ["--minShapes=input_ids:1x4,attention_mask:1x4", "--optShapes=input_ids:2x16,attention_mask:16x16",
      "--maxShapes=input_ids:4x32,attention_mask:32x32"]),
]


@pytest.mark.parametrize("overrides, profiles, flags", BERT_PROFILES)
def test_multi_input_named_dim_profiles_map_to_polygraphy_and_trtexec(overrides, profiles, flags):
    from polygraphy.backend.trt import Profile

    cfg = recipe_cfg("bert_torch", "engine.tensorrt.timing_cache=null", *overrides)
    p = plan(cfg, "model.clean.onnx", "model.engine")
    assert p.profiles == profiles
    shape_flags = [f for f in trtexec_command(p, cfg) if f.startswith(("--minShapes", "--optShapes", "--maxShapes",
                                                                        "--profile"))]
    assert shape_flags == flags
    polygraphy = [Profile().add(name, *shapes) for prof in p.profiles for name, shapes in prof.items()]
    assert [tuple(x["input_ids"].max) if "input_ids" in x else None for x in polygraphy][0] == tuple(profiles[0]["input_ids"][2])


def test_auto_timing_cache_is_shared_under_the_cache_dir(tmp_path):
    cfg = recipe_cfg("cnn_torch")
    assert plan(cfg, "a", "b", cache_dir=tmp_path).timing_cache == str(tmp_path / "tensorrt" / "timing.cache")


def test_qdq_models_need_no_calibrator():
    cfg = recipe_cfg("cnn_torch", "engine.precision=int8")
    assert plan(cfg, "a", "b", has_qdq=True).calibration_cache is None
    assert plan(cfg, "a", "b", has_qdq=False).calibration_cache == "calibration.cache"


def test_plan_feeds_polygraphy_create_config():
    """The trt-free part of a plan constructs Polygraphy's CreateConfig as is (enums resolve with TensorRT)."""
    from polygraphy.backend.trt import CreateConfig, Profile

    p, _ = _plan("engine.precision=fp16", "engine.tensorrt.builder_optimization_level=4",
                 "engine.tensorrt.precision_constraints=prefer", "engine.tensorrt.refittable=true")
    profiles = [Profile().add(n, *s) for prof in p.profiles for n, s in prof.items()]
    config = CreateConfig(profiles=profiles, **p.config)
    assert (config.fp16, config.tf32, config.builder_optimization_level, config.precision_constraints,
            config.refittable) == (True, True, 4, "prefer", True)
    assert config.profiles[0]["input"].max == [64, 1, 28, 28] or tuple(config.profiles[0]["input"].max) == (64, 1, 28, 28)


@pytest.mark.parametrize("overrides, path, words", [
    (["model.profiles=[{input: {min: [8,1,28,28], opt: [4,1,28,28], max: [16,1,28,28]}}]"], "model.profiles[0].input",
     "min <= opt <= max"),
    (["model.profiles=[{images: {min: [1,1,28,28], opt: [1,1,28,28], max: [1,1,28,28]}}]"], "model.profiles[0].images",
     "a profile for a missing input"),
    (["model.profiles=[{input: {min: [1,28,28], opt: [1,28,28], max: [1,28,28]}}]"], "model.profiles[0].input",
     "need 4 dims"),
    (["model.profiles=[{input: {min: [1,1,28,28], opt: [1,1,28,28], max: [1,1,32,32]}}]"], "model.profiles[0].input",
     "a fixed dimension cannot vary"),
    (["model.dims.batch=[1,128,64]"], "model.dims.batch", "min <= opt <= max"),
    (["engine.tensorrt.builder_optimization_level=9"], "engine.tensorrt.builder_optimization_level", "0..5"),
    (["+engine.tensorrt.layer_precisions.conv*=fp64", "engine.tensorrt.precision_constraints=obey"],
     "engine.tensorrt.layer_precisions.conv*", "unknown precision"),
    (["+engine.tensorrt.layer_precisions.conv*=fp16"], "engine.tensorrt.precision_constraints", "only hints"),
    (["engine.tensorrt.plugins=[/no/such/libplugin.so]"], "engine.tensorrt.plugins[0]", "not found"),
])
def test_tensorrt_lint(overrides, path, words):
    from compiler.lint import lint

    problems = lint(recipe_cfg("cnn_torch", *overrides))
    assert any(p.path == path and words in str(p) for p in problems), [str(p) for p in problems]
