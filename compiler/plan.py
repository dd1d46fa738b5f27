"""The EnginePlan: every engine decision, made once, at lint, from `engine.*` and what is installed.

The backend and why, the TensorRT major version it is planned for, the graph conversion
(none/fp16/bf16/int8/fp8) and the tool that makes it, the TensorRT build arguments, the
onnxruntime session options and the verification reference. Pipeline skips, cache keys,
quantize, build, verify, latency, report and reproducers read the plan; this module and lint are
the only readers of `cfg.engine`.

TensorRT 11 removed weak typing: no precision builder flags, no precision constraints or layer
precisions, no INT8 calibrator. Every network is strongly typed and reduced precision is in the
graph (ModelOpt AutoCast for fp16/bf16, ModelOpt PTQ Q/DQ for int8/fp8). TensorRT 10 keeps the weak
flags as options, strongly typed by default.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from compiler.errors import Problem

LATEST_TENSORRT = 11
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
# what each tool writes into the graph
TOOL_CONVERSIONS = {"onnxruntime": ("fp16", "int8"), "modelopt": ("fp16", "bf16", "int8", "fp8")}
# what each backend runs: the precisions lint accepts, and the ones `precision: best` builds (runs well)
BACKEND_PRECISIONS = {"onnxruntime": ("fp32", "fp16", "int8"), "tensorrt": PRECISIONS, "tensorrt_rtx": PRECISIONS}
# TensorRT 11's migration guide: recipe options that map to removed APIs, and what replaces each
REMOVED_IN_TENSORRT_11 = {
    "engine.tensorrt.strongly_typed": ("weak typing (strongly_typed=false)", "every network is strongly typed; "
                                       "reduced precision goes into the graph: engine.precision=fp16|bf16|int8|fp8"),
    "engine.tensorrt.precision_constraints": ("BuilderFlag.OBEY/PREFER_PRECISION_CONSTRAINTS",
                                              "keep nodes in fp32 in the graph: quantize.keep_fp32=[node, ...] "
                                              "(AutoCast's and PTQ's excluded nodes)"),
    "engine.tensorrt.layer_precisions": ("per-layer precision hints (ILayer.precision)",
                                         "quantize.keep_fp32=[node, ...] (AutoCast's and PTQ's excluded nodes)"),
    "engine.tensorrt.calibration_cache": ("the INT8 calibrator API (IBuilderConfig.int8_calibrator)",
                                          "Q/DQ from ModelOpt PTQ, calibrated on data.*: engine.precision=int8 "
                                          "quantize.tool=modelopt"),
}
# builder flags and command-line options that no TensorRT 11 plan or command may carry
REMOVED_FLAGS_11 = {
    "builder": ("fp16", "bf16", "int8", "fp8", "int4", "fp4", "precision_constraints", "calibrator", "direct_io"),
    "trtexec": ("--fp16", "--bf16", "--int8", "--fp8", "--int4", "--best", "--calib", "--precisionConstraints",
                "--layerPrecisions", "--layerOutputTypes", "--directIO"),
    "polygraphy": ("--fp16", "--bf16", "--int8", "--fp8", "--calibration-cache", "--precision-constraints",
                   "--layer-precisions", "--layer-output-types"),
}


# QDQPropagationTransformer moves each QuantizeLinear up through MaxPool/Reshape/Transpose. The quantize stage
# already puts Q/DQ on every op onnxruntime runs in int8, so all propagation adds is int8 inside the fp32
# islands it left on purpose: an fp32 conv -> uint8 NCHW MaxPool costs 2 ms of a 2.3 ms model (cnn_torch, b32).
INT8_DISABLED_OPTIMIZERS = ("QDQPropagationTransformer",)


# --- what is installed, read without importing it ------------------------------------------

@functools.lru_cache(maxsize=None)
def installed_version(module: str) -> Optional[str]:
    """The version of the distribution that provides `module` (tensorrt, tensorrt_rtx), or None."""
    import importlib.metadata as md

    if importlib.util.find_spec(module) is None:
        return None
    for dist in md.packages_distributions().get(module, []):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return "unknown"


def has_cuda_gpu() -> bool:
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


@functools.lru_cache(maxsize=None)
def compute_capability() -> Optional[str]:
    """The first GPU's compute capability ("9.0"), from nvidia-smi; None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def builder_status(backend: str = "tensorrt") -> tuple[bool, str]:
    """Whether this NVIDIA builder can build here; the reason when it cannot."""
    module = "tensorrt_rtx" if backend == "tensorrt_rtx" else "tensorrt"
    if installed_version(module) is None:
        return False, f"the `{module}` Python package is not installed"
    if not has_cuda_gpu():
        return False, "no CUDA GPU was found (no /dev/nvidia0, no nvidia-smi)"
    return True, f"{module} {installed_version(module)} is importable and a CUDA GPU is present"


def tensorrt_status() -> tuple[bool, str]:
    return builder_status("tensorrt")


# --- the plan -------------------------------------------------------------------------------

@dataclass(frozen=True)
class EnginePlan:
    backend: str                       # onnxruntime | tensorrt | tensorrt_rtx
    reason: str                        # why this backend
    precision: str                     # as asked: fp32 | fp16 | bf16 | int8 | fp8 | best
    conversion: str = "none"           # what the graph is converted to before the build: none|fp16|bf16|int8|fp8
    tool: str = "none"                 # what converts it: none | modelopt | onnxruntime
    tool_choice: str = "auto"          # quantize.tool as asked
    high_precision: str = "fp32"       # ModelOpt PTQ: the type of what is not quantized (fp16 on TensorRT)
    tensorrt_version: int = LATEST_TENSORRT   # the TensorRT major version build args and reproducers are for
    strongly_typed: bool = True
    builder_precisions: tuple[str, ...] = ()  # TensorRT 10 weak typing only: BuilderFlag.FP16 ...
    calibrator: bool = False           # TensorRT 10 weak-typed int8 through the calibrator: the build reads data
    tensorrt: dict = field(default_factory=dict)      # the engine.tensorrt section, plain values
    onnxruntime: dict = field(default_factory=dict)   # session options (disabled_optimizers resolved)
    timing_cache: Optional[str] = None  # per TensorRT version and compute capability; not in a key (a cache)
    search: tuple[str, ...] = ()       # precision=best: the precisions built and compared
    reduced_at: Optional[str] = None   # the first artifact in reduced precision: "conversion" | "engine" | None
    disabled_asked: Optional[tuple] = None  # engine.onnxruntime.disabled_optimizers as asked (null: by conversion)

    # -- derived -------------------------------------------------------------------------
    @property
    def nvidia(self) -> bool:
        return self.backend in ("tensorrt", "tensorrt_rtx")

    @property
    def reference(self) -> str:
        """What the engine's accuracy is judged against: the fp32 model, or the framework model."""
        return "fp32" if self.reduced_at else "framework"

    @property
    def intra_op_threads(self) -> Any:
        return self.onnxruntime.get("intra_op_threads", 0)

    def with_precision(self, precision: str) -> "EnginePlan":
        """The plan this recipe gets with another engine.precision (the candidates of `best`)."""
        return _resolve_precision(dataclasses.replace(self, precision=precision, search=()), self.tool_choice)

    # -- cache keys: what each stage reads of the plan -----------------------------------
    def load_key(self) -> dict:
        return {"custom_op_libraries": self.onnxruntime.get("custom_op_libraries", [])}

    def conversion_key(self) -> dict:
        key = {"conversion": self.conversion, "tool": self.tool}
        if self.tool == "modelopt":
            key["high_precision"] = self.high_precision
        if self.tool == "onnxruntime":  # its float16 converter and QDQ runs differ by backend only through this
            key["backend"] = self.backend
        return key

    def build_key(self) -> dict:
        key = {"backend": self.backend, **self.conversion_key()}
        if self.nvidia:
            section = {k: v for k, v in self.tensorrt.items() if k not in ("timing_cache", "version")}
            key.update(tensorrt_version=self.tensorrt_version, strongly_typed=self.strongly_typed,
                       builder_precisions=list(self.builder_precisions), calibrator=self.calibrator, tensorrt=section)
        else:
            key["onnxruntime"] = {k: v for k, v in self.onnxruntime.items() if k != "intra_op_threads"}
        return key

    def verify_key(self) -> dict:
        return {**self.build_key(), "onnxruntime": self.onnxruntime, "reduced_at": self.reduced_at}

    def summary(self) -> dict:
        """What the report shows of the plan."""
        out = {"backend": self.backend, "reason": self.reason, "precision": self.precision,
               "conversion": self.conversion, "tool": self.tool, "reference": self.reference}
        if self.nvidia:
            out.update(tensorrt_version=self.tensorrt_version, strongly_typed=self.strongly_typed,
                       builder_precisions=list(self.builder_precisions), calibrator=self.calibrator,
                       timing_cache=self.timing_cache)
        if self.search:
            out["search"] = list(self.search)
        return out


def _tensorrt_major(requested: Optional[int], backend: str) -> int:
    if requested is not None:
        return int(requested)
    if backend == "tensorrt_rtx":
        return LATEST_TENSORRT  # TensorRT-RTX has no weak typing either
    version = installed_version("tensorrt")
    if version and version[0].isdigit():
        return int(version.split(".")[0])
    return LATEST_TENSORRT


def choose_backend(requested: str) -> tuple[str, str]:
    if requested != "auto":
        return requested, "requested by engine.backend"
    ok, why = tensorrt_status()
    if ok:
        return "tensorrt", f"auto: {why}"
    return "onnxruntime", f"auto: TensorRT cannot run here ({why}); using onnxruntime"


def _default_tool(backend: str) -> str:
    return "onnxruntime" if backend == "onnxruntime" else "modelopt"


def _resolve_precision(p: EnginePlan, tool_choice: str) -> EnginePlan:
    """Conversion, tool, builder flags and the reduced-precision point for p.precision."""
    precision, weak = p.precision, p.nvidia and not p.strongly_typed
    if precision in ("fp32", "best"):
        conversion = "none"
    elif weak and precision in ("fp16", "bf16"):
        conversion = "none"                      # TensorRT 10 weak typing: a builder flag on the fp32 model
    elif weak and precision == "int8" and p.tensorrt.get("calibration_cache"):
        conversion = "none"                      # TensorRT 10's calibrator
    else:
        conversion = precision
    tool = "none" if conversion == "none" else (_default_tool(p.backend) if tool_choice == "auto" else tool_choice)
    builder = (precision,) if weak and precision not in ("fp32", "best") else ()
    ort = {**p.onnxruntime, "disabled_optimizers": _disabled_optimizers(p.disabled_asked, conversion)}
    return dataclasses.replace(
        p, conversion=conversion, tool=tool, builder_precisions=builder, onnxruntime=ort,
        calibrator=weak and precision == "int8" and conversion == "none",
        high_precision="fp16" if p.nvidia else "fp32",
        reduced_at="conversion" if conversion != "none" else ("engine" if builder else None), tool_choice=tool_choice)


def _search_space(backend: str, onnxruntime: dict) -> tuple[str, ...]:
    if backend == "onnxruntime":  # CPU fp16 runs through casts; it pays only on a GPU provider
        gpu = any(p != "CPUExecutionProvider" for p in onnxruntime.get("providers", []))
        return ("fp32", "fp16", "int8") if gpu else ("fp32", "int8")
    cc = compute_capability()
    space = ["fp32", "fp16", "int8"]
    if cc and float(cc) >= 8.0:
        space.insert(2, "bf16")
    if cc and float(cc) >= 8.9:
        space.append("fp8")
    return tuple(space)


def resolve(cfg: Any) -> EnginePlan:
    """The plan for a typed recipe. Pure given the recipe and what is installed; lint checks it first."""
    from omegaconf import OmegaConf

    from compiler.cache import cache_root

    engine = OmegaConf.to_container(cfg.engine, resolve=True, enum_to_str=True)
    backend, reason = choose_backend(engine["backend"])
    ort = dict(engine["onnxruntime"])
    trt = dict(engine["tensorrt"])
    major = _tensorrt_major(trt["version"], backend)
    strongly_typed = True if major >= 11 or trt["strongly_typed"] is None else bool(trt["strongly_typed"])
    timing = trt["timing_cache"]
    if timing == "auto":
        from compiler.backends.tensorrt_plan import timing_cache_name

        module = "tensorrt_rtx" if backend == "tensorrt_rtx" else "tensorrt"
        timing = str(cache_root(cfg.cache) / "tensorrt" / timing_cache_name(
            installed_version(module) or str(major), compute_capability()))
    disabled = ort["disabled_optimizers"]
    plan = EnginePlan(backend=backend, reason=reason, precision=engine["precision"], tensorrt_version=major,
                      strongly_typed=strongly_typed, tensorrt=trt, onnxruntime=ort,
                      disabled_asked=None if disabled is None else tuple(disabled),
                      timing_cache=timing if backend != "onnxruntime" else None)
    plan = _resolve_precision(plan, cfg.quantize.tool.value)
    if plan.precision == "best":
        plan = dataclasses.replace(plan, search=_search_space(backend, ort))
    return plan


def custom_op_libraries(cfg: Any) -> list[str]:
    """The onnxruntime custom-op libraries the recipe registers (the import lint reads them before a plan)."""
    return list(cfg.engine.onnxruntime.custom_op_libraries)


def _disabled_optimizers(chosen: Optional[tuple], conversion: str) -> list[str]:
    """The transformers the engine is built and loaded without (null: int8 Q/DQ skips QDQ propagation)."""
    if chosen is not None:
        return list(chosen)
    return list(INT8_DISABLED_OPTIMIZERS) if conversion == "int8" else []


# --- lint -----------------------------------------------------------------------------------

def plan_problems(cfg: Any) -> list[Problem]:
    """Every engine problem of a typed recipe, per backend and TensorRT version, with the fix."""
    from compiler.backends.tensorrt_plan import tensorrt_problems

    engine, problems = cfg.engine, []
    requested = engine.backend.value
    if requested in ("tensorrt", "tensorrt_rtx"):
        ok, why = builder_status(requested)
        if not ok:
            package = "'compiler[tensorrt-rtx]'" if requested == "tensorrt_rtx" else \
                "'compiler[tensorrt]' --extra-index-url https://pypi.nvidia.com"
            problems.append(Problem("engine.backend", f"{requested} cannot run here: {why}", requested,
                                    "auto, onnxruntime, tensorrt, tensorrt_rtx",
                                    fix=f"install it on a CUDA machine (pip install {package}), "
                                        "or use engine.backend=auto"))
    plan = resolve(cfg)
    allowed = BACKEND_PRECISIONS[plan.backend] + ("best",)
    if plan.precision not in allowed:
        problems.append(Problem("engine.precision", f"the {plan.backend} backend does not build {plan.precision} engines",
                                plan.precision, ", ".join(allowed),
                                fix=f"use engine.precision={' or '.join(allowed)}"))
    elif plan.tool != "none" and plan.conversion not in TOOL_CONVERSIONS[plan.tool]:
        problems.append(Problem("quantize.tool", f"{plan.tool} does not convert a graph to {plan.conversion}",
                                plan.tool, ", ".join(t for t, c in TOOL_CONVERSIONS.items() if plan.conversion in c),
                                fix="use quantize.tool=modelopt (or auto)"))
    if (plan.conversion != "none" or plan.search) and cfg.data.source.value == "none":
        problems.append(Problem("engine.precision", f"{plan.precision} needs calibration data and labels for its "
                                "accuracy budget", plan.precision,
                                fix="give data (data.source=npz data.path=...) or use engine.precision=fp32"))
    if cfg.data.calibration_size < 1:
        problems.append(Problem("data.calibration_size", "must be positive", cfg.data.calibration_size))
    threads = plan.intra_op_threads
    if not (threads == "auto" or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 0)):
        problems.append(Problem("engine.onnxruntime.intra_op_threads", "a thread count or auto", threads,
                                "0 (onnxruntime's default), 1, 2, ..., auto"))
    for i, library in enumerate(plan.onnxruntime["custom_op_libraries"]):
        if not Path(library).expanduser().is_file():
            problems.append(Problem(f"engine.onnxruntime.custom_op_libraries[{i}]", "library not found", library))
    if plan.nvidia or requested == "auto":
        problems += _removed_option_problems(engine.tensorrt, plan.tensorrt_version, engine.precision.value)
        problems += tensorrt_problems(engine.tensorrt, plan)
    return problems


def _removed_option_problems(t: Any, major: int, precision: str) -> list[Problem]:
    """Weak-typing options the planned TensorRT version does not have, or a strongly typed build ignores."""
    used = [key for key, on in (("engine.tensorrt.strongly_typed", t.strongly_typed is False),
                                ("engine.tensorrt.precision_constraints", t.precision_constraints.value != "none"),
                                ("engine.tensorrt.layer_precisions", bool(t.layer_precisions)),
                                ("engine.tensorrt.calibration_cache", t.calibration_cache is not None)) if on]
    if major >= 11:
        return [Problem(key, f"removed in TensorRT {major}: {REMOVED_IN_TENSORRT_11[key][0]}", _value(t, key),
                        fix=f"replace it: {REMOVED_IN_TENSORRT_11[key][1]}") for key in used]
    if t.strongly_typed is not False:
        return [Problem(key, "a weak-typing option, and the network is strongly typed", _value(t, key),
                        fix="set engine.tensorrt.strongly_typed=false (TensorRT 10 only), or "
                            + REMOVED_IN_TENSORRT_11[key][1]) for key in used]
    if t.calibration_cache is not None and precision != "int8":
        return [Problem("engine.tensorrt.calibration_cache", "the calibrator makes int8 engines only",
                        t.calibration_cache, fix="set engine.precision=int8, or remove calibration_cache")]
    return []


def _value(t: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    value = t[key.rsplit(".", 1)[1]]
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value)
    return getattr(value, "value", value)
