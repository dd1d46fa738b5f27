"""An EnginePlan as TensorRT build arguments and reproducer commands, per TensorRT major version.

`build_args()` turns the plan into Polygraphy loader arguments (TensorRT enums kept as names until
`backends/tensorrt.py` resolves them), and the reproducers (`trtexec`, `polygraphy convert`,
`polygraphy run`) are rendered from those same arguments, so they cannot disagree with the build.
TensorRT 11 is always strongly typed: no precision flags, no constraints, no calibrator.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.errors import Problem

LAYER_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
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
class BuildArgs:
    onnx: str
    engine: str
    tensorrt_version: int
    network: dict[str, Any] = field(default_factory=dict)       # NetworkFromOnnxPath kwargs
    config: dict[str, Any] = field(default_factory=dict)        # CreateConfig kwargs
    profiles: list[dict[str, tuple[list[int], list[int], list[int]]]] = field(default_factory=list)
    layer_precisions: dict[str, str] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)
    timing_cache: str | None = None
    calibration_cache: str | None = None     # TensorRT 10 weak-typed int8 through the calibrator


def rtx_module() -> str | None:
    """The module TensorRT-RTX installs as: `tensorrt_rtx` (the metapackage), or `tensorrt_rtx_bindings` (the
    tensorrt-rtx-cu13-libs + -bindings wheels, which is what PyPI serves)."""
    import importlib.util

    for module in ("tensorrt_rtx", "tensorrt_rtx_bindings"):
        if importlib.util.find_spec(module) is not None:
            return module
    return None


def timing_cache_name(version: str, compute_capability: str | None) -> str:
    """A timing cache per TensorRT version and GPU: tactics timed on one are wrong, or refused, on another."""
    safe = re.sub(r"[^0-9A-Za-z.]+", "_", version)
    return f"timing-trt{safe}-sm{(compute_capability or 'unknown').replace('.', '')}.cache"


def build_args(plan: Any, profiles: list, onnx_path: str | Path, engine_path: str | Path) -> BuildArgs:
    """Every TensorRT field of the plan, mapped once. `profiles`: the IO spec's engine_profiles()."""
    t = plan.tensorrt
    b = BuildArgs(onnx=str(onnx_path), engine=str(engine_path), tensorrt_version=plan.tensorrt_version,
                  profiles=profiles)
    if plan.tensorrt_version < 11 and plan.strongly_typed:  # 11: always strongly typed, the flag is ignored
        b.network["strongly_typed"] = True
    for precision in plan.builder_precisions:               # 10, weak typing only
        b.config[precision] = True
    if plan.backend != "tensorrt_rtx":  # TensorRT-RTX picks its own math modes: it has no TF32 flag
        b.config["tf32"] = plan.math_mode.tensorrt_tf32()   # strict fp32 unless precision is tf32
    if t["workspace_mib"] is not None:
        b.config["memory_pool_limits"] = {TrtEnum("MemoryPoolType", "WORKSPACE"): int(t["workspace_mib"]) << 20}
    if t["builder_optimization_level"] is not None:
        b.config["builder_optimization_level"] = int(t["builder_optimization_level"])
    if plan.timing_cache:
        b.timing_cache = plan.timing_cache
        b.config["load_timing_cache"] = plan.timing_cache
    if t["tactic_sources"] is not None:
        b.config["tactic_sources"] = [TrtEnum("TacticSource", _TACTIC_NAMES[s]) for s in t["tactic_sources"]]
    if not plan.strongly_typed:
        if t["precision_constraints"] != "none":
            b.config["precision_constraints"] = t["precision_constraints"]
        b.layer_precisions = dict(t["layer_precisions"])
    if t["sparsity"]:
        b.config["sparse_weights"] = True
    if t["version_compatible"]:
        b.config["version_compatible"] = True
    if t["hardware_compatibility"] != "none":
        b.config["hardware_compatibility_level"] = TrtEnum("HardwareCompatibilityLevel",
                                                           t["hardware_compatibility"].upper())
    if t["dla_core"] is not None:
        b.config.update(use_dla=True, allow_gpu_fallback=True)
    if t["max_aux_streams"] is not None:
        b.config["max_aux_streams"] = int(t["max_aux_streams"])
    if t["profiling_verbosity"] != "layer_names_only":
        b.config["profiling_verbosity"] = TrtEnum("ProfilingVerbosity", t["profiling_verbosity"].upper())
    if t["refittable"]:
        b.config["refittable"] = True
    b.plugins = [str(Path(x).expanduser()) for x in t["plugins"]]
    if plan.calibrator:
        b.calibration_cache = t["calibration_cache"]
    return b


# --- reproducer commands -------------------------------------------------------------------

def _dims(shape: list[int], sep: str) -> str:
    return sep.join(str(d) for d in shape)


def trtexec_command(b: BuildArgs, plan: Any) -> list[str]:
    t = plan.tensorrt
    tool = "tensorrt_rtx" if plan.backend == "tensorrt_rtx" else "trtexec"  # TensorRT-RTX's own trtexec
    cmd = [tool, f"--onnx={b.onnx}", f"--saveEngine={b.engine}"]
    if b.network.get("strongly_typed"):
        cmd.append("--stronglyTyped")
    cmd += [f"--{p}" for p in plan.builder_precisions]
    if b.config.get("tf32") is False:
        cmd.append("--noTF32")
    for i, profile in enumerate(b.profiles):
        if i:
            cmd.append("--profile=%d" % i)  # trtexec takes further profiles after the first set of shapes
        for key, idx in (("minShapes", 0), ("optShapes", 1), ("maxShapes", 2)):
            cmd.append(f"--{key}=" + ",".join(f"{name}:{_dims(s[idx], 'x')}" for name, s in profile.items()))
    if t["workspace_mib"] is not None:
        cmd.append(f"--memPoolSize=workspace:{int(t['workspace_mib'])}M")
    if t["builder_optimization_level"] is not None:
        cmd.append(f"--builderOptimizationLevel={t['builder_optimization_level']}")
    if b.timing_cache:
        cmd.append(f"--timingCacheFile={b.timing_cache}")
    if t["tactic_sources"] is not None:
        chosen = {_TACTIC_NAMES[s] for s in t["tactic_sources"]}
        cmd.append("--tacticSources=" + ",".join(("+" if n in chosen else "-") + n for n in _TACTIC_NAMES.values()))
    if "precision_constraints" in b.config:
        cmd.append(f"--precisionConstraints={b.config['precision_constraints']}")
    if b.layer_precisions:
        cmd.append("--layerPrecisions=" + ",".join(f"{k}:{v}" for k, v in b.layer_precisions.items()))
    if t["sparsity"]:
        cmd.append("--sparsity=enable")
    if t["version_compatible"]:
        cmd.append("--versionCompatible")
    if t["hardware_compatibility"] != "none":
        cmd.append(f"--hardwareCompatibilityLevel={_HW_TRTEXEC[t['hardware_compatibility']]}")
    if t["dla_core"] is not None:
        cmd += [f"--useDLACore={t['dla_core']}", "--allowGPUFallback"]
    if t["max_aux_streams"] is not None:
        cmd.append(f"--maxAuxStreams={t['max_aux_streams']}")
    if t["profiling_verbosity"] != "layer_names_only":
        cmd.append(f"--profilingVerbosity={t['profiling_verbosity']}")
    if t["refittable"]:
        cmd.append("--refit")
    cmd += [f"--staticPlugins={x}" for x in b.plugins]
    if b.calibration_cache:
        cmd.append(f"--calib={b.calibration_cache}")
    return cmd


def _polygraphy_build_flags(b: BuildArgs, plan: Any) -> list[str]:
    t = plan.tensorrt
    flags = ["--strongly-typed"] if b.network.get("strongly_typed") else []
    flags += [f"--{p}" for p in plan.builder_precisions]
    if b.config.get("tf32"):
        flags.append("--tf32")
    for profile in b.profiles:
        for key, idx in (("min", 0), ("opt", 1), ("max", 2)):
            flags += [f"--trt-{key}-shapes"] + [f"{n}:[{_dims(s[idx], ',')}]" for n, s in profile.items()]
    if t["workspace_mib"] is not None:
        flags += ["--pool-limit", f"workspace:{int(t['workspace_mib'])}M"]
    if t["builder_optimization_level"] is not None:
        flags += ["--builder-optimization-level", str(t["builder_optimization_level"])]
    if b.timing_cache:
        flags += ["--load-timing-cache", b.timing_cache, "--save-timing-cache", b.timing_cache]
    if t["tactic_sources"] is not None:
        flags += ["--tactic-sources", *[_TACTIC_NAMES[s] for s in t["tactic_sources"]]]
    if "precision_constraints" in b.config:
        flags += ["--precision-constraints", b.config["precision_constraints"]]
    if b.layer_precisions:
        flags += ["--layer-precisions", *[f"{k}:{v.replace('fp', 'float')}" for k, v in b.layer_precisions.items()]]
    if t["sparsity"]:
        flags.append("--sparse-weights")
    if t["version_compatible"]:
        flags.append("--version-compatible")
    if t["hardware_compatibility"] != "none":
        flags += ["--hardware-compatibility-level", t["hardware_compatibility"]]
    if t["dla_core"] is not None:
        flags += ["--use-dla", "--allow-gpu-fallback"]
    if t["max_aux_streams"] is not None:
        flags += ["--max-aux-streams", str(t["max_aux_streams"])]
    if t["profiling_verbosity"] != "layer_names_only":
        flags += ["--profiling-verbosity", t["profiling_verbosity"]]
    if t["refittable"]:
        flags.append("--refittable")
    if b.plugins:
        flags += ["--plugins", *b.plugins]
    if b.calibration_cache:
        flags += ["--calibration-cache", b.calibration_cache]
    return flags


def polygraphy_convert_command(b: BuildArgs, plan: Any) -> list[str]:
    return ["polygraphy", "convert", b.onnx, "-o", b.engine, *_polygraphy_build_flags(b, plan)]


def polygraphy_run_command(b: BuildArgs, plan: Any, atol: float, rtol: float) -> list[str]:
    return ["polygraphy", "run", b.onnx, "--trt", "--onnxrt", *_polygraphy_build_flags(b, plan),
            "--atol", f"{atol:g}", "--rtol", f"{rtol:g}"]


def reproducers(plan: Any, profiles: list, onnx_name: str, atol: float, rtol: float) -> dict[str, str]:
    """The three commands, as shell lines relative to the run directory, for the model the build took;
    rendered for the plan's TensorRT version, with the recipe's tolerances as they are now."""
    import shlex

    b = build_args(plan, profiles, onnx_name, "model.engine")
    env = "POLYGRAPHY_USE_TENSORRT_RTX=1 " if plan.backend == "tensorrt_rtx" else ""
    return {"trtexec": shlex.join(trtexec_command(b, plan)),
            "polygraphy_convert": env + shlex.join(polygraphy_convert_command(b, plan)),
            "polygraphy_run": env + shlex.join(polygraphy_run_command(b, plan, atol, rtol))}


# --- lint ----------------------------------------------------------------------------------

def tensorrt_problems(t: Any, plan: Any) -> list[Problem]:
    """Range and file checks of the engine.tensorrt section (removed options: plan.plan_problems)."""
    problems = []
    if t.builder_optimization_level is not None and not 0 <= t.builder_optimization_level <= 5:
        problems.append(Problem("engine.tensorrt.builder_optimization_level", "out of range",
                                t.builder_optimization_level, "0..5",
                                fix="e.g. engine.tensorrt.builder_optimization_level=3 (TensorRT's default)"))
    for key in ("workspace_mib", "max_aux_streams", "dla_core"):
        value = t[key]
        if value is not None and value < 0:
            problems.append(Problem(f"engine.tensorrt.{key}", "must be >= 0", value, "0, 1, 2, ...",
                                    fix=f"set engine.tensorrt.{key} to 0 or more, or remove it"))
    if t.version is not None and t.version not in (10, 11):
        problems.append(Problem("engine.tensorrt.version", "not a TensorRT major version this compiler maps", t.version,
                                "10, 11, null (the installed one)",
                                fix="remove engine.tensorrt.version to map the installed TensorRT"))
    for pattern, precision in t.layer_precisions.items():
        if precision not in LAYER_PRECISIONS:
            problems.append(Problem(f"engine.tensorrt.layer_precisions.{pattern}", "unknown precision", precision,
                                    ", ".join(LAYER_PRECISIONS), fix="use one of the allowed precisions"))
    if t.layer_precisions and t.precision_constraints.value == "none" and not plan.strongly_typed:
        problems.append(Problem("engine.tensorrt.precision_constraints", "layer precisions are only hints unless "
                                "constraints are set", "none", "prefer, obey",
                                fix="set engine.tensorrt.precision_constraints=obey (or prefer)"))
    for i, plugin in enumerate(t.plugins):
        if not os.path.isfile(os.path.expanduser(plugin)):
            problems.append(Problem(f"engine.tensorrt.plugins[{i}]", "plugin library not found", plugin,
                                "paths of existing plugin libraries (.so)", fix="give the library's absolute path"))
    return problems
