"""The EnginePlan and its TensorRT mapping, per TensorRT major version: table-driven, no TensorRT needed.

Every combination of precision, strongly_typed and backend gives one plan, one conversion artifact and one
set of reproducer lines; no TensorRT 11 plan or command carries a flag the migration guide lists as removed.
Real engine builds are in test_tensorrt_engine.py (marked `tensorrt`).
"""

import itertools

import pytest

from compiler.backends.tensorrt_plan import (TrtEnum, build_args, polygraphy_convert_command, polygraphy_run_command,
                                             reproducers, timing_cache_name, trtexec_command)
from compiler.plan import REMOVED_FLAGS_11, resolve
from tests.conftest import recipe_cfg

SHAPES = ["--minShapes=input:1x1x28x28", "--optShapes=input:32x1x28x28", "--maxShapes=input:64x1x28x28"]
WEAK10 = ["engine.tensorrt.version=10", "engine.tensorrt.strongly_typed=false"]


def _plan(recipe, *overrides):
    return resolve(recipe_cfg(recipe, "engine.backend=tensorrt", "engine.tensorrt.timing_cache=null", *overrides))


def _args(recipe="cnn_torch", *overrides):
    from compiler.iospec import IOSpec

    cfg = recipe_cfg(recipe, "engine.backend=tensorrt", "engine.tensorrt.timing_cache=null", *overrides)
    p = resolve(cfg)
    return build_args(p, IOSpec.from_cfg(cfg).engine_profiles(), "model.clean.onnx", "model.engine"), p


def _artifact(p) -> str:
    return "model.clean.onnx" if p.conversion == "none" else f"model.{p.conversion}.onnx"


# (backend, version, strongly_typed, precision) -> (conversion, tool, builder flags, calibrator)
def _expected(backend, version, typed, precision):
    if precision in ("fp32", "tf32"):  # tf32: the fp32 graph in another math mode
        return ("none", "none"), (), False
    if backend == "onnxruntime":
        return (precision, "onnxruntime"), (), False
    weak = version == 10 and typed is False
    if weak and precision in ("fp16", "bf16"):
        return ("none", "none"), (precision,), False
    return (precision, "modelopt"), ((precision,) if weak else ()), False


MATRIX = [(b, v, t, p) for b, v, t, p in itertools.product(
    ("tensorrt", "tensorrt_rtx", "onnxruntime"), (10, 11), (None, True, False),
    ("fp32", "tf32", "fp16", "bf16", "int8", "fp8"))
    if not (b == "onnxruntime" and (p in ("bf16", "fp8") or v == 11 or t is not None))  # onnxruntime: once each
    and not (b == "tensorrt_rtx" and p == "tf32")                       # TensorRT-RTX has no TF32 flag
    and not (b == "tensorrt_rtx" and (v == 10 or t is False))           # TensorRT-RTX: strongly typed only
    and not (v == 11 and t is False)]                                   # lint refuses it (test below)


@pytest.mark.parametrize("backend, version, typed, precision", MATRIX, ids=lambda x: str(x))
def test_every_combination_gives_its_plan_artifact_and_reproducers(backend, version, typed, precision):
    overrides = [f"engine.backend={backend}", f"engine.precision={precision}", f"engine.tensorrt.version={version}"]
    if typed is not None:
        overrides.append(f"engine.tensorrt.strongly_typed={str(typed).lower()}")
    cfg = recipe_cfg("cnn_torch", "engine.tensorrt.timing_cache=null", *overrides)
    p = resolve(cfg)
    (conversion, tool), builder, calibrator = _expected(backend, version, typed, precision)
    assert (p.backend, p.conversion, p.tool, p.builder_precisions, p.calibrator) == \
        (backend, conversion, tool, builder, calibrator)
    assert p.strongly_typed is (typed is not False or version >= 11)
    assert p.reduced_at == ("conversion" if conversion != "none" else "engine" if builder or precision == "tf32"
                            else None)
    assert p.math_mode.name == ("tf32" if precision == "tf32" else "strict fp32")
    lines = reproducers(p, [{"input": ([1, 1, 28, 28], [32, 1, 28, 28], [64, 1, 28, 28])}], _artifact(p), 1e-4, 1e-3)
    trtexec = lines["trtexec"].split()
    expected = ["tensorrt_rtx" if backend == "tensorrt_rtx" else "trtexec", f"--onnx={_artifact(p)}",
                "--saveEngine=model.engine"]
    if version == 10 and typed is not False:  # onnxruntime too: its reproducers are the same model on TensorRT
        expected.append("--stronglyTyped")
    expected += [f"--{f}" for f in builder]
    if backend != "tensorrt_rtx" and precision != "tf32":  # fp32 is strict fp32: TensorRT's TF32 default turned off
        expected.append("--noTF32")
    expected += SHAPES
    assert trtexec == expected
    assert ("--tf32" in lines["polygraphy_convert"].split()) == (precision == "tf32")
    assert lines["polygraphy_convert"].endswith("--trt-max-shapes 'input:[64,1,28,28]'")
    assert ("POLYGRAPHY_USE_TENSORRT_RTX=1" in lines["polygraphy_run"]) == (backend == "tensorrt_rtx")
    if p.tensorrt_version >= 11:
        _assert_no_removed_flag(p, lines)


def _assert_no_removed_flag(p, lines):
    """TensorRT 11's migration guide: these builder flags and options no longer exist."""
    assert not set(p.builder_precisions) & set(REMOVED_FLAGS_11["builder"]) and not p.calibrator
    b = build_args(p, [], "m.onnx", "e")
    assert not set(b.config) & set(REMOVED_FLAGS_11["builder"]) and not b.layer_precisions and not b.calibration_cache
    for word in lines["trtexec"].split():
        assert word.split("=")[0] not in REMOVED_FLAGS_11["trtexec"], word
    for name in ("polygraphy_convert", "polygraphy_run"):
        assert not set(lines[name].split()) & set(REMOVED_FLAGS_11["polygraphy"]), lines[name]


def test_the_removed_list_is_the_migration_guides():
    assert set(REMOVED_FLAGS_11["trtexec"]) >= {"--fp16", "--int8", "--bf16", "--fp8", "--int4", "--best", "--calib"}
    assert set(REMOVED_FLAGS_11["builder"]) >= {"fp16", "bf16", "int8", "fp8", "int4", "fp4", "precision_constraints"}


def test_tensorrt_10_calibrator_int8_reads_data_and_calibrates_at_build():
    p = _plan("cnn_torch", *WEAK10, "engine.precision=int8", "engine.tensorrt.calibration_cache=calib.cache")
    assert (p.conversion, p.tool, p.builder_precisions, p.calibrator) == ("none", "none", ("int8",), True)
    b, _ = _args("cnn_torch", *WEAK10, "engine.precision=int8", "engine.tensorrt.calibration_cache=calib.cache")
    assert "--calib=calib.cache" in trtexec_command(b, p) and "--int8" in trtexec_command(b, p)


@pytest.mark.parametrize("tool, expected", [("auto", "modelopt"), ("modelopt", "modelopt"), ("onnxruntime", "onnxruntime")])
def test_quantize_tool_is_a_recipe_choice(tool, expected):
    assert _plan("cnn_torch", "engine.precision=int8", f"quantize.tool={tool}").tool == expected
    ort = resolve(recipe_cfg("cnn_torch", "engine.backend=onnxruntime", "engine.precision=int8", f"quantize.tool={tool}"))
    assert ort.tool == ("onnxruntime" if tool == "auto" else expected)


def test_best_searches_what_the_backend_runs_well():
    ort = resolve(recipe_cfg("cnn_torch", "engine.backend=onnxruntime", "engine.precision=best"))
    assert ort.search == ("fp32", "int8") and ort.conversion == "none"
    assert [ort.with_precision(p).conversion for p in ort.search] == ["none", "int8"]
    assert ort.with_precision("int8").onnxruntime["disabled_optimizers"] == ["QDQPropagationTransformer"]
    assert ort.onnxruntime["disabled_optimizers"] == []


# (overrides, expected CreateConfig/NetworkFromOnnxPath kwargs, trtexec flags, polygraphy flags): one field each
CASES = [
    ([], {"tf32": False}, ["--noTF32"], []),
    (["engine.precision=tf32"], {"tf32": True}, [], ["--tf32"]),
    ([*WEAK10, "engine.precision=fp16"], {"fp16": True}, ["--fp16"], ["--fp16"]),
    ([*WEAK10, "engine.precision=bf16"], {"bf16": True}, ["--bf16"], ["--bf16"]),
    ([*WEAK10, "engine.precision=fp8"], {"fp8": True}, ["--fp8"], ["--fp8"]),
    (["engine.tensorrt.version=10"], {"network.strongly_typed": True}, ["--stronglyTyped"], ["--strongly-typed"]),
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
    ([*WEAK10, "engine.tensorrt.precision_constraints=obey"], {"precision_constraints": "obey"},
     ["--precisionConstraints=obey"], ["--precision-constraints", "obey"]),
    ([*WEAK10, "engine.tensorrt.precision_constraints=obey", "+engine.tensorrt.layer_precisions.conv*=fp32"],
     {"layer_precisions": {"conv*": "fp32"}, "precision_constraints": "obey"}, ["--layerPrecisions=conv*:fp32"],
     ["--layer-precisions", "conv*:float32"]),
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
    ([*WEAK10, "engine.tensorrt.calibration_cache=/tmp/c.cache", "engine.precision=int8"],
     {"calibration_cache": "/tmp/c.cache", "int8": True}, ["--int8", "--calib=/tmp/c.cache"],
     ["--int8"]),
]


def _contains(haystack, needle):
    return any(haystack[i:i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


@pytest.mark.parametrize("overrides, expected, trtexec, poly", CASES, ids=lambda c: str(c)[:60])
def test_field_maps_to_one_place(overrides, expected, trtexec, poly):
    b, p = _args("cnn_torch", *overrides)
    for key, value in expected.items():
        if key.startswith("network."):
            assert b.network[key.split(".", 1)[1]] == value
        elif key in ("layer_precisions", "calibration_cache"):
            assert getattr(b, key) == value
        else:
            assert b.config[key] == value, key
    baseline, _ = _args("cnn_torch", *[o for o in overrides if o.startswith("engine.tensorrt.version")])
    changed = {k for k in set(b.config) | set(baseline.config) if b.config.get(k) != baseline.config.get(k)}
    assert changed <= set(expected) | {"tf32"}, f"{overrides} changed more than its own flags: {changed}"
    cmd = trtexec_command(b, p)
    assert cmd[:3] == ["trtexec", "--onnx=model.clean.onnx", "--saveEngine=model.engine"]
    for flag in trtexec:
        assert flag in cmd, flag
    assert _contains(polygraphy_convert_command(b, p), poly)
    assert _contains(polygraphy_run_command(b, p, 1e-4, 1e-3), poly)


def test_default_plan_exact_commands_for_tensorrt_11_and_10():
    b, p = _args()
    assert p.tensorrt_version == 11 or p.tensorrt_version == 10  # the installed one, else 11
    b, p = _args("cnn_torch", "engine.tensorrt.version=11")
    assert trtexec_command(b, p) == ["trtexec", "--onnx=model.clean.onnx", "--saveEngine=model.engine", "--noTF32",
                                     *SHAPES]
    assert polygraphy_convert_command(b, p) == [
        "polygraphy", "convert", "model.clean.onnx", "-o", "model.engine",
        "--trt-min-shapes", "input:[1,1,28,28]", "--trt-opt-shapes", "input:[32,1,28,28]",
        "--trt-max-shapes", "input:[64,1,28,28]"]
    assert polygraphy_run_command(b, p, 1e-4, 1e-3)[-4:] == ["--atol", "0.0001", "--rtol", "0.001"]
    b, p = _args("cnn_torch", "engine.tensorrt.version=10")
    assert trtexec_command(b, p) == ["trtexec", "--onnx=model.clean.onnx", "--saveEngine=model.engine",
                                     "--stronglyTyped", "--noTF32", *SHAPES]


def test_profiles_are_derived_from_the_io_spec_and_its_dims():
    b, _ = _args("cnn_torch", "model.dims.batch=[2,4,16]")
    assert b.profiles == [{"input": ([2, 1, 28, 28], [4, 1, 28, 28], [16, 1, 28, 28])}]
    b, _ = _args("cnn_torch", "model.inputs=[{name: input, shape: [1, 1, 28, 28]}]")  # a fixed batch
    assert b.profiles == [{"input": ([1, 1, 28, 28], [1, 1, 28, 28], [1, 1, 28, 28])}]


def test_several_explicit_profiles():
    shapes = "[{input: {min: [1,1,28,28], opt: [1,1,28,28], max: [4,1,28,28]}}, " \
             "{input: {min: [8,1,28,28], opt: [16,1,28,28], max: [32,1,28,28]}}]"
    b, p = _args("cnn_torch", f"model.profiles={shapes}")
    assert len(b.profiles) == 2 and b.profiles[1]["input"][2] == [32, 1, 28, 28]
    cmd = trtexec_command(b, p)
    assert "--profile=1" in cmd and "--maxShapes=input:32x1x28x28" in cmd
    assert polygraphy_convert_command(b, p).count("--trt-max-shapes") == 2


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

    b, ep = _args("bert_torch", *overrides)
    p = b
    assert p.profiles == profiles
    shape_flags = [f for f in trtexec_command(b, ep) if f.startswith(("--minShapes", "--optShapes", "--maxShapes",
                                                                        "--profile"))]
    assert shape_flags == flags
    polygraphy = [Profile().add(name, *shapes) for prof in p.profiles for name, shapes in prof.items()]
    assert [tuple(x["input_ids"].max) if "input_ids" in x else None for x in polygraphy][0] == tuple(profiles[0]["input_ids"][2])




def test_timing_cache_is_keyed_by_tensorrt_version_and_compute_capability(tmp_path):
    assert timing_cache_name("11.4.0.1", "9.0") == "timing-trt11.4.0.1-sm90.cache"
    assert timing_cache_name("10.16.1", "8.6") != timing_cache_name("11.4.0", "8.6")
    assert timing_cache_name("11.4.0", "8.6") != timing_cache_name("11.4.0", "9.0")
    p = resolve(recipe_cfg("cnn_torch", "engine.backend=tensorrt", f"cache.dir={tmp_path}"))
    assert p.timing_cache.startswith(str(tmp_path / "tensorrt" / "timing-trt")) and p.timing_cache.endswith(".cache")


def test_plan_feeds_polygraphy_create_config():
    """The TensorRT-free part of the build args constructs Polygraphy's CreateConfig as is."""
    from polygraphy.backend.trt import CreateConfig, Profile

    b, _ = _args("cnn_torch", *WEAK10, "engine.precision=fp16", "engine.tensorrt.builder_optimization_level=4",
                 "engine.tensorrt.precision_constraints=prefer", "engine.tensorrt.refittable=true")
    profiles = [Profile().add(n, *s) for prof in b.profiles for n, s in prof.items()]
    config = CreateConfig(profiles=profiles, **b.config)
    assert (config.fp16, config.tf32, config.builder_optimization_level, config.precision_constraints,
            config.refittable) == (True, False, 4, "prefer", True)


def test_engine_inspection_reads_both_json_layouts():
    from compiler.backends.tensorrt import io_tensors_of, layers_of

    v10 = {"Layers": ["conv1", {"Name": "fc", "Precision": "FP16"}], "Bindings": ["input", "output"]}
    v11 = {"Layers": [{"Name": "conv1", "Precision": "INT8"}],
           "I/O Tensors": [{"Name": "input", "IOMode": "Input", "DataType": "Float", "Dimensions": [-1, 1, 28, 28]},
                           {"Name": "output", "IOMode": "Output", "DataType": "Float", "Dimensions": [-1, 10]}]}
    assert [t["name"] for t in io_tensors_of(v10)] == ["input", "output"]
    assert io_tensors_of(v11)[1] == {"name": "output", "mode": "Output", "dtype": "Float", "shape": [-1, 10]}
    assert layers_of(v10) == [{"name": "conv1", "precision": None}, {"name": "fc", "precision": "FP16"}]
    assert layers_of(v11) == [{"name": "conv1", "precision": "INT8"}]


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
    ([*WEAK10, "+engine.tensorrt.layer_precisions.conv*=fp64", "engine.tensorrt.precision_constraints=obey"],
     "engine.tensorrt.layer_precisions.conv*", "unknown precision"),
    ([*WEAK10, "+engine.tensorrt.layer_precisions.conv*=fp16"], "engine.tensorrt.precision_constraints", "only hints"),
    (["engine.tensorrt.version=10", "engine.tensorrt.precision_constraints=obey"],
     "engine.tensorrt.precision_constraints", "a weak-typing option, and the network is strongly typed"),
    (["engine.tensorrt.version=11", "engine.tensorrt.precision_constraints=obey"],
     "engine.tensorrt.precision_constraints", "removed in TensorRT 11"),
    (["engine.tensorrt.version=11", "engine.tensorrt.strongly_typed=false"],
     "engine.tensorrt.strongly_typed", "removed in TensorRT 11: weak typing"),
    (["engine.tensorrt.version=11", "engine.tensorrt.calibration_cache=c.cache", "engine.precision=int8"],
     "engine.tensorrt.calibration_cache", "the INT8 calibrator API"),
    (["engine.tensorrt.version=9"], "engine.tensorrt.version", "10, 11"),
    (["engine.precision=bf16"], "engine.precision", "the onnxruntime backend does not build bf16"),
    (["engine.precision=int8", "quantize.tool=onnxruntime", "engine.backend=tensorrt"], "engine.backend",
     "tensorrt cannot run here"),
    (["engine.onnxruntime.intra_op_threads=many"], "engine.onnxruntime.intra_op_threads", "a thread count or auto"),
    (["engine.tensorrt.plugins=[/no/such/libplugin.so]"], "engine.tensorrt.plugins[0]", "not found"),
])
def test_tensorrt_lint(overrides, path, words):
    from compiler.lint import lint

    problems = lint(recipe_cfg("cnn_torch", *overrides))
    assert any(p.path == path and words in str(p) for p in problems), [str(p) for p in problems]
