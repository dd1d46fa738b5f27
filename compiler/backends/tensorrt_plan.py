"""The recipe's `engine` section as TensorRT build arguments: one place per flag, no TensorRT needed.

`plan()` turns the recipe into Polygraphy loader arguments (TensorRT enums kept as names until
`backends/tensorrt.py` resolves them), and the reproducer commands (`trtexec`, `polygraphy convert`,
`polygraphy run`) are rendered from that same plan, so they cannot disagree with the build.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.errors import Problem

LAYER_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
_TRTEXEC_PRECISION = {"fp16": ["--fp16"], "bf16": ["--bf16"], "int8": ["--int8"], "fp8": ["--fp8"],
                      "best": ["--best"]}
# engine.precision -> CreateConfig flags; `best` enables every reduced precision, as trtexec --best does
_PRECISION_FLAGS = {"fp32": {}, "fp16": {"fp16": True}, "bf16": {"bf16": True}, "int8": {"int8": True},
                    "fp8": {"fp8": True}, "best": {"fp16": True, "bf16": True, "int8": True}}
_TACTIC_NAMES = {"cublas": "CUBLAS", "cublas_lt": "CUBLAS_LT", "cudnn": "CUDNN",
                 "edge_mask_convolutions": "EDGE_MASK_CONVOLUTIONS", "jit_convolutions": "JIT_CONVOLUTIONS"}
_HW_TRTEXEC = {"ampere_plus": "ampere+", "same_compute_capability": "sameComputeCapability"}


@dataclass(frozen=True)
class TrtEnum:
    """A TensorRT enum member by name, resolved only when TensorRT is imported."""

    enum: str
    member: str

    def resolve(self, trt: Any) -> Any:
        return getattr(getattr(trt, self.enum), self.member)


@dataclass
class BuildPlan:
    onnx: str
    engine: str
    network: dict[str, Any] = field(default_factory=dict)       # NetworkFromOnnxPath kwargs
    config: dict[str, Any] = field(default_factory=dict)        # CreateConfig kwargs
    profiles: list[dict[str, tuple[list[int], list[int], list[int]]]] = field(default_factory=list)
    layer_precisions: dict[str, str] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)
    timing_cache: str | None = None
    calibration_cache: str | None = None     # set when int8 needs a calibrator (no QDQ nodes)


def derived_profiles(cfg: Any) -> list[dict[str, tuple[list[int], list[int], list[int]]]]:
    """The IO spec's optimization profiles as per-input (min, opt, max) full shapes."""
    from compiler.iospec import IOSpec

    return IOSpec.from_cfg(cfg).engine_profiles()


def plan(cfg: Any, onnx_path: str | Path, engine_path: str | Path, has_qdq: bool = False,
         cache_dir: str | Path | None = None) -> BuildPlan:
    """Every TensorRT flag of the recipe, mapped once."""
    t, precision = cfg.engine.tensorrt, cfg.engine.precision.value
    p = BuildPlan(onnx=str(onnx_path), engine=str(engine_path))
    if t.strongly_typed:
        p.network["strongly_typed"] = True
    else:
        p.config.update(_PRECISION_FLAGS[precision])
    p.config["tf32"] = bool(t.tf32)
    p.profiles = derived_profiles(cfg)
    if t.workspace_mib is not None:
        p.config["memory_pool_limits"] = {TrtEnum("MemoryPoolType", "WORKSPACE"): int(t.workspace_mib) << 20}
    if t.builder_optimization_level is not None:
        p.config["builder_optimization_level"] = int(t.builder_optimization_level)
    if t.timing_cache:
        path = t.timing_cache
        if path == "auto":
            path = str(Path(cache_dir or ".") / "tensorrt" / "timing.cache")
        p.timing_cache = path
        p.config["load_timing_cache"] = path
    if t.tactic_sources is not None:
        p.config["tactic_sources"] = [TrtEnum("TacticSource", _TACTIC_NAMES[s.value]) for s in t.tactic_sources]
    if t.precision_constraints.value != "none":
        p.config["precision_constraints"] = t.precision_constraints.value
    p.layer_precisions = dict(t.layer_precisions)
    if t.sparsity:
        p.config["sparse_weights"] = True
    if t.version_compatible:
        p.config["version_compatible"] = True
    if t.hardware_compatibility.value != "none":
        p.config["hardware_compatibility_level"] = TrtEnum("HardwareCompatibilityLevel",
                                                           t.hardware_compatibility.value.upper())
    if t.dla_core is not None:
        p.config.update(use_dla=True, allow_gpu_fallback=True)
    if t.max_aux_streams is not None:
        p.config["max_aux_streams"] = int(t.max_aux_streams)
    if t.profiling_verbosity.value != "layer_names_only":
        p.config["profiling_verbosity"] = TrtEnum("ProfilingVerbosity", t.profiling_verbosity.value.upper())
    if t.refittable:
        p.config["refittable"] = True
    p.plugins = [str(Path(x).expanduser()) for x in t.plugins]
    if precision in ("int8", "best") and not has_qdq and not t.strongly_typed:
        p.calibration_cache = t.calibration_cache or str(Path(engine_path).with_name("calibration.cache"))
    return p


# --- reproducer commands -------------------------------------------------------------------

def _dims(shape: list[int], sep: str) -> str:
    return sep.join(str(d) for d in shape)


def trtexec_command(p: BuildPlan, cfg: Any) -> list[str]:
    t = cfg.engine.tensorrt
    cmd = ["trtexec", f"--onnx={p.onnx}", f"--saveEngine={p.engine}"]
    if t.strongly_typed:
        cmd.append("--stronglyTyped")
    else:
        cmd += _TRTEXEC_PRECISION.get(cfg.engine.precision.value, [])
    if not p.config["tf32"]:
        cmd.append("--noTF32")
    for i, profile in enumerate(p.profiles):
        if i:
            cmd.append("--profile=%d" % i)  # trtexec takes further profiles after the first set of shapes
        for key, idx in (("minShapes", 0), ("optShapes", 1), ("maxShapes", 2)):
            cmd.append(f"--{key}=" + ",".join(f"{name}:{_dims(s[idx], 'x')}" for name, s in profile.items()))
    if t.workspace_mib is not None:
        cmd.append(f"--memPoolSize=workspace:{int(t.workspace_mib)}M")
    if t.builder_optimization_level is not None:
        cmd.append(f"--builderOptimizationLevel={t.builder_optimization_level}")
    if p.timing_cache:
        cmd.append(f"--timingCacheFile={p.timing_cache}")
    if t.tactic_sources is not None:
        chosen = {_TACTIC_NAMES[s.value] for s in t.tactic_sources}
        cmd.append("--tacticSources=" + ",".join(("+" if n in chosen else "-") + n for n in _TACTIC_NAMES.values()))
    if t.precision_constraints.value != "none":
        cmd.append(f"--precisionConstraints={t.precision_constraints.value}")
    if p.layer_precisions:
        cmd.append("--layerPrecisions=" + ",".join(f"{k}:{v}" for k, v in p.layer_precisions.items()))
    if t.sparsity:
        cmd.append("--sparsity=enable")
    if t.version_compatible:
        cmd.append("--versionCompatible")
    if t.hardware_compatibility.value != "none":
        cmd.append(f"--hardwareCompatibilityLevel={_HW_TRTEXEC[t.hardware_compatibility.value]}")
    if t.dla_core is not None:
        cmd += [f"--useDLACore={t.dla_core}", "--allowGPUFallback"]
    if t.max_aux_streams is not None:
        cmd.append(f"--maxAuxStreams={t.max_aux_streams}")
    if t.profiling_verbosity.value != "layer_names_only":
        cmd.append(f"--profilingVerbosity={t.profiling_verbosity.value}")
    if t.refittable:
        cmd.append("--refit")
    cmd += [f"--staticPlugins={x}" for x in p.plugins]
    if p.calibration_cache:
        cmd.append(f"--calib={p.calibration_cache}")
    return cmd


def _polygraphy_build_flags(p: BuildPlan, cfg: Any) -> list[str]:
    t = cfg.engine.tensorrt
    flags = ["--strongly-typed"] if t.strongly_typed else \
        [f"--{k}" for k in ("fp16", "bf16", "int8", "fp8") if p.config.get(k)]
    if p.config["tf32"]:
        flags.append("--tf32")
    for profile in p.profiles:
        for key, idx in (("min", 0), ("opt", 1), ("max", 2)):
            flags += [f"--trt-{key}-shapes"] + [f"{n}:[{_dims(s[idx], ',')}]" for n, s in profile.items()]
    if t.workspace_mib is not None:
        flags += ["--pool-limit", f"workspace:{int(t.workspace_mib)}M"]
    if t.builder_optimization_level is not None:
        flags += ["--builder-optimization-level", str(t.builder_optimization_level)]
    if p.timing_cache:
        flags += ["--load-timing-cache", p.timing_cache, "--save-timing-cache", p.timing_cache]
    if t.tactic_sources is not None:
        flags += ["--tactic-sources", *[_TACTIC_NAMES[s.value] for s in t.tactic_sources]]
    if t.precision_constraints.value != "none":
        flags += ["--precision-constraints", t.precision_constraints.value]
    if p.layer_precisions:
        flags += ["--layer-precisions", *[f"{k}:{v.replace('fp', 'float')}" for k, v in p.layer_precisions.items()]]
    if t.sparsity:
        flags.append("--sparse-weights")
    if t.version_compatible:
        flags.append("--version-compatible")
    if t.hardware_compatibility.value != "none":
        flags += ["--hardware-compatibility-level", t.hardware_compatibility.value]
    if t.dla_core is not None:
        flags += ["--use-dla", "--allow-gpu-fallback"]
    if t.max_aux_streams is not None:
        flags += ["--max-aux-streams", str(t.max_aux_streams)]
    if t.profiling_verbosity.value != "layer_names_only":
        flags += ["--profiling-verbosity", t.profiling_verbosity.value]
    if t.refittable:
        flags.append("--refittable")
    if p.plugins:
        flags += ["--plugins", *p.plugins]
    if p.calibration_cache:
        flags += ["--calibration-cache", p.calibration_cache]
    return flags


def polygraphy_convert_command(p: BuildPlan, cfg: Any) -> list[str]:
    return ["polygraphy", "convert", p.onnx, "-o", p.engine, *_polygraphy_build_flags(p, cfg)]


def polygraphy_run_command(p: BuildPlan, cfg: Any) -> list[str]:
    return ["polygraphy", "run", p.onnx, "--trt", "--onnxrt", *_polygraphy_build_flags(p, cfg),
            "--atol", f"{cfg.verify.atol:g}", "--rtol", f"{cfg.verify.rtol:g}"]


def reproducers(cfg: Any, onnx_name: str = "model.clean.onnx", has_qdq: bool = False,
                cache_dir: str | Path | None = None) -> dict[str, str]:
    """The three commands, as shell lines, relative to the run directory, for the model the build took."""
    import shlex

    p = plan(cfg, onnx_name, "model.engine", has_qdq=has_qdq, cache_dir=cache_dir)
    return {name: shlex.join(fn(p, cfg)) for name, fn in (
        ("trtexec", trtexec_command), ("polygraphy_convert", polygraphy_convert_command),
        ("polygraphy_run", polygraphy_run_command))}


# --- lint ----------------------------------------------------------------------------------

def tensorrt_problems(cfg: Any) -> list[Problem]:
    t, problems = cfg.engine.tensorrt, []
    if t.builder_optimization_level is not None and not 0 <= t.builder_optimization_level <= 5:
        problems.append(Problem("engine.tensorrt.builder_optimization_level", "out of range",
                                t.builder_optimization_level, "0..5"))
    for key in ("workspace_mib", "max_aux_streams", "dla_core"):
        value = t[key]
        if value is not None and value < 0:
            problems.append(Problem(f"engine.tensorrt.{key}", "must be >= 0", value))
    for pattern, precision in t.layer_precisions.items():
        if precision not in LAYER_PRECISIONS:
            problems.append(Problem(f"engine.tensorrt.layer_precisions.{pattern}", "unknown precision", precision,
                                    ", ".join(LAYER_PRECISIONS)))
    if t.layer_precisions and t.precision_constraints.value == "none":
        problems.append(Problem("engine.tensorrt.precision_constraints", "layer precisions are only hints unless "
                                "constraints are set", "none", "prefer, obey",
                                fix="set engine.tensorrt.precision_constraints=obey (or prefer)"))
    for i, plugin in enumerate(t.plugins):
        if not os.path.isfile(os.path.expanduser(plugin)):
            problems.append(Problem(f"engine.tensorrt.plugins[{i}]", "plugin library not found", plugin))
    if t.strongly_typed and cfg.engine.precision.value != "fp32":
        problems.append(Problem("engine.precision", "a strongly typed network takes its types from the ONNX model",
                                cfg.engine.precision.value, "fp32",
                                fix="keep engine.precision=fp32 with strongly_typed (quantize or convert the model instead)"))
    return problems
