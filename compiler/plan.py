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
from typing import TYPE_CHECKING, Any, Optional

from compiler.backends.providers import (FULL_NAMES, gpu_onnxruntime, onnxruntime_distribution, provider_problems,
    resolve as resolve_providers, uses_gpu)
from compiler.backends.tensorrt_ops import import_problems
from compiler.backends.tensorrt_plan import rtx_module, tensorrt_problems, timing_cache_name
from compiler.cache import cache_root
from compiler.errors import Problem
from compiler.heavy import onnx
from compiler.numerics import for_precision

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.numerics import MathMode

LATEST_TENSORRT = 11
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8")
# precisions that change no graph: the engine runs the fp32 model in another math mode (numerics.py)
MATH_MODE_PRECISIONS = ("tf32",)
# what each tool writes into the graph
TOOL_CONVERSIONS = {"onnxruntime": ("fp16", "int8"), "modelopt": ("fp16", "bf16", "int8", "fp8")}
# what each backend runs: the precisions lint accepts; onnxruntime on a GPU provider also runs tf32 and bf16
BACKEND_PRECISIONS = {"onnxruntime": ("fp32", "fp16", "int8"), "tensorrt": PRECISIONS,
                      "tensorrt_rtx": tuple(p for p in PRECISIONS if p != "tf32")}  # RTX has no TF32 flag
ONNXRUNTIME_GPU_PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")
# TensorRT-RTX's runtime runs these compute capabilities (and any above 12.1); its builder runs on more
RTX_RUNTIME_CAPABILITIES = ("8.0", "8.6", "8.9", "12.0", "12.1")
TF32_MIN_CAPABILITY = 8.0   # Ampere: TF32 tensor cores; below it tf32 is fp32
# TensorRT 11's migration guide: recipe options that map to removed APIs, and what replaces each
REMOVED_IN_TENSORRT_11 = {
    "engine.tensorrt.strongly_typed": ("weak typing (strongly_typed=false)", "every network is strongly typed; "
                                       "reduced precision goes into the graph: engine.precision=fp16|bf16|int8|fp8"),
    "engine.tensorrt.precision_constraints": ("BuilderFlag.OBEY/PREFER_PRECISION_CONSTRAINTS",
                                              "keep nodes in fp32 in the graph: quantize.keep_fp32=[NODE_A,NODE_B] "
                                              "(AutoCast's and PTQ's excluded nodes)"),
    "engine.tensorrt.layer_precisions": ("per-layer precision hints (ILayer.precision)",
                                         "quantize.keep_fp32=[NODE_A,NODE_B] (AutoCast's and PTQ's excluded nodes)"),
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


# passes of the default surgery list that undo what onnxruntime's CUDA attention fusion needs (EnginePlan.surgery_key)
GPU_SKIPPED_PASSES = ("fuse_parallel_matmuls",)


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
    owners = md.packages_distributions()
    for dist in owners.get(module, []) or owners.get(module + "_bindings", []):
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


def rtx_runs_on(cc: Optional[str]) -> bool:
    return cc is None or cc in RTX_RUNTIME_CAPABILITIES or float(cc) > 12.1


def builder_status(backend: str = "tensorrt") -> tuple[bool, str]:
    """Whether this NVIDIA builder can build here; the reason when it cannot."""
    module = (rtx_module() or "tensorrt_rtx") if backend == "tensorrt_rtx" else "tensorrt"
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
    # the CUDA provider's runtime settings (onnxruntime backend): transformer fusion before an fp16 conversion,
    # the convolution layout, and CUDA graph capture; written beside the engine (backends/onnxruntime.runtime)
    fusion: bool = False
    fusion_choice: Optional[bool] = None  # engine.onnxruntime.fusion as asked (null: by the provider)
    layout: str = "auto"               # auto | nchw | nhwc
    cuda_graph: bool = False

    # -- derived -------------------------------------------------------------------------
    @property
    def nvidia(self) -> bool:
        return self.backend in ("tensorrt", "tensorrt_rtx")

    @property
    def providers(self) -> list[str]:
        """onnxruntime's execution providers, full names in order (resolved: short names, null = this machine's)."""
        return list(self.onnxruntime.get("providers") or ["CPUExecutionProvider"])

    @property
    def gpu(self) -> bool:
        """The engine runs on a CUDA GPU (TensorRT, or onnxruntime's CUDA/TensorRT provider): the framework
        reference runs there too, and latency is timed with inputs on the device."""
        return self.nvidia or uses_gpu(self.providers)

    @property
    def math_mode(self) -> "MathMode":
        """The engine's math mode for fp32 layers: strict fp32, unless precision is tf32."""
        return for_precision(self.precision)

    @property
    def reference(self) -> str:
        """What the engine's accuracy is judged against: the fp32 model, or the framework model."""
        return "fp32" if self.reduced_at else "framework"

    @property
    def intra_op_threads(self) -> Any:
        return self.onnxruntime.get("intra_op_threads", 0)

    @property
    def cuda_provider(self) -> bool:
        """An onnxruntime engine on the CUDA provider: where fusion, layout and CUDA graphs apply."""
        return self.backend == "onnxruntime" and "CUDAExecutionProvider" in self.providers

    def with_precision(self, precision: str) -> "EnginePlan":
        """The plan this recipe gets with another engine.precision (the candidates of `best`)."""
        return _resolve_precision(dataclasses.replace(self, precision=precision, search=()), self.tool_choice)

    def layout_variants(self, has_convolutions: bool, running: str = "nchw") -> list["EnginePlan"]:
        """`best` on the CUDA provider searches runtime settings too, each variant built, verified and timed like a
        precision: first, for a (passing) candidate of a model with convolutions, the layout other than the one it
        runs (`running`: its layout with `auto` resolved, backends.onnxruntime.effective_layout)."""
        if not (self.cuda_provider and has_convolutions):
            return []
        return [dataclasses.replace(self, layout="nchw" if running == "nhwc" else "nhwc")]

    def graph_variant(self, graph_capturable: bool) -> Optional["EnginePlan"]:
        """CUDA graphs for a candidate (either layout) whose own placement has every node on the GPU."""
        if not (self.cuda_provider and graph_capturable) or self.cuda_graph:
            return None
        return dataclasses.replace(self, cuda_graph=True)

    def unfused_variant(self) -> Optional["EnginePlan"]:
        """The conversion without the transformer fusion, where it fused."""
        return dataclasses.replace(self, fusion=False) if self.cuda_provider and self.fusion else None

    @property
    def label(self) -> str:
        """The candidate's name in `best`'s table and folder: its precision and what differs from the defaults."""
        parts = [self.precision]
        if self.layout != "auto":
            parts.append(self.layout)
        if self.cuda_graph:
            parts.append("graph")
        if self.cuda_provider and self.conversion == "fp16" and not self.fusion:
            parts.append("unfused")
        return "+".join(parts)

    def surgery_key(self) -> dict:
        """What the surgery list leaves out for this engine: onnxruntime's CUDA attention fusion needs q, k and v
        as three projections, so `fuse_parallel_matmuls` (which pays on the CPU and TensorRT) is skipped there."""
        return {"skip": list(GPU_SKIPPED_PASSES)} if self.cuda_provider else {}

    # -- cache keys: what each stage reads of the plan -----------------------------------
    def load_key(self) -> dict:
        return {"custom_op_libraries": self.onnxruntime.get("custom_op_libraries", [])}

    def conversion_key(self) -> dict:
        key = {"conversion": self.conversion, "tool": self.tool}
        if self.tool == "modelopt":
            key["high_precision"] = self.high_precision
        if self.tool == "onnxruntime":  # its float16 converter and QDQ runs differ by backend only through this
            key["backend"] = self.backend
            key["gpu"] = self.gpu
            key["fusion"] = self.fusion     # fp16 for the CUDA provider fuses first (backends/cuda_fusion.py)
        return key

    def build_key(self) -> dict:
        key = {"backend": self.backend, **self.conversion_key()}
        if self.nvidia:
            section = {k: v for k, v in self.tensorrt.items() if k not in ("timing_cache", "version")}
            key.update(tensorrt_version=self.tensorrt_version, strongly_typed=self.strongly_typed,
                       builder_precisions=list(self.builder_precisions), calibrator=self.calibrator, tensorrt=section)
        else:
            key["onnxruntime"] = {k: v for k, v in self.onnxruntime.items() if k != "intra_op_threads"}
            # written beside the engine: tf32 and fp32 share a graph, not their runtime settings
            key.update(layout=self.layout, cuda_graph=self.cuda_graph, math_mode=self.math_mode.name)
        return key

    def verify_key(self) -> dict:
        return {**self.build_key(), "onnxruntime": self.onnxruntime, "reduced_at": self.reduced_at}

    def summary(self) -> dict:
        """What the report shows of the plan."""
        out = {"backend": self.backend, "reason": self.reason, "precision": self.precision,
               "conversion": self.conversion, "tool": self.tool, "reference": self.reference,
               "math_mode": self.math_mode.name, "gpu": self.gpu}
        if self.backend == "onnxruntime":
            out["providers"] = self.providers
        if self.cuda_provider:
            out.update(fusion=self.fusion, layout=self.layout, cuda_graph=self.cuda_graph)
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
    """auto: TensorRT where it can run, else onnxruntime (on the CUDA provider where onnxruntime-gpu and a GPU
    are present: the providers' default, backends/providers.py)."""
    if requested != "auto":
        return requested, "requested by engine.backend"
    ok, why = tensorrt_status()
    if ok:
        return "tensorrt", f"auto: {why}"
    return "onnxruntime", f"auto: TensorRT cannot run here ({why}); using onnxruntime"


def _onnxruntime_where(providers: list[str], asked: Optional[list]) -> str:
    """Where an onnxruntime engine runs, and why there."""
    names = ", ".join(FULL_NAMES.get(p, p) for p in providers)
    if asked is not None:
        return f"providers {names} (engine.onnxruntime.providers)"
    if uses_gpu(providers):
        return f"on the CUDA provider: onnxruntime-gpu and a CUDA GPU are present (providers {names})"
    why = "no CUDA GPU" if not has_cuda_gpu() else \
        f"{onnxruntime_distribution() or 'no onnxruntime'} is a CPU build" if not gpu_onnxruntime() else "CPU"
    return f"on the CPU ({why})"


def _default_tool(backend: str, conversion: str) -> str:
    """onnxruntime's own tools for its backend, except bf16, which only ModelOpt writes."""
    return "onnxruntime" if backend == "onnxruntime" and conversion in TOOL_CONVERSIONS["onnxruntime"] else "modelopt"


def _resolve_precision(p: EnginePlan, tool_choice: str) -> EnginePlan:
    """Conversion, tool, builder flags and the reduced-precision point for p.precision."""
    precision, weak = p.precision, p.nvidia and not p.strongly_typed
    if precision in ("fp32", "best") or precision in MATH_MODE_PRECISIONS:
        conversion = "none"                      # tf32: the fp32 graph, run in TF32 (plan.math_mode)
    elif weak and precision in ("fp16", "bf16"):
        conversion = "none"                      # TensorRT 10 weak typing: a builder flag on the fp32 model
    elif weak and precision == "int8" and p.tensorrt.get("calibration_cache"):
        conversion = "none"                      # TensorRT 10's calibrator
    else:
        conversion = precision
    tool = "none" if conversion == "none" else (_default_tool(p.backend, conversion) if tool_choice == "auto"
                                                else tool_choice)
    builder = (precision,) if weak and precision not in ("fp32", "best", *MATH_MODE_PRECISIONS) else ()
    reduced = "conversion" if conversion != "none" else \
        ("engine" if builder or precision in MATH_MODE_PRECISIONS else None)
    ort = {**p.onnxruntime, "disabled_optimizers": _disabled_optimizers(p.disabled_asked, conversion)}
    fusion = p.fusion_choice is True or (p.fusion_choice is None and p.cuda_provider and conversion == "fp16"
                                         and tool == "onnxruntime")
    return dataclasses.replace(
        p, conversion=conversion, tool=tool, builder_precisions=builder, onnxruntime=ort, fusion=fusion,
        calibrator=weak and precision == "int8" and conversion == "none",
        high_precision="fp16" if p.nvidia else "fp32",
        reduced_at=reduced, tool_choice=tool_choice)


def _search_space(backend: str, providers: list[str]) -> tuple[str, ...]:
    """What `precision: best` builds: fp32 and int8 everywhere; on a GPU also fp16, and tf32 and bf16 from compute
    capability 8.0 (bf16 on onnxruntime only through ModelOpt); fp8 with TensorRT from 8.9."""
    if backend == "onnxruntime" and not uses_gpu(providers):  # CPU fp16 runs through casts: it never pays
        return ("fp32", "int8")
    cc = compute_capability()
    ampere = cc is not None and float(cc) >= TF32_MIN_CAPABILITY
    space = ["fp32"] + (["tf32"] if ampere and backend != "tensorrt_rtx" else []) + ["fp16"]
    if ampere and (backend != "onnxruntime" or installed_version("modelopt")):
        space.append("bf16")
    space.append("int8")
    if backend != "onnxruntime" and cc and float(cc) >= 8.9:
        space.append("fp8")
    return tuple(space)


def resolve(cfg: DictConfig) -> EnginePlan:
    """The plan for a typed recipe. Pure given the recipe and what is installed; lint checks it first."""
    from omegaconf import OmegaConf


    engine = OmegaConf.to_container(cfg.engine, resolve=True, enum_to_str=True)

    backend, reason = choose_backend(engine["backend"])
    ort = dict(engine["onnxruntime"])
    fusion, layout, cuda_graph = ort.pop("fusion"), ort.pop("layout"), ort.pop("cuda_graph")
    ort["providers"] = resolve_providers(ort["providers"], has_cuda_gpu())
    if backend == "onnxruntime":
        reason += "; " + _onnxruntime_where(ort["providers"], engine["onnxruntime"]["providers"])
    trt = dict(engine["tensorrt"])
    major = _tensorrt_major(trt["version"], backend)
    strongly_typed = True if major >= 11 or trt["strongly_typed"] is None else bool(trt["strongly_typed"])
    timing = trt["timing_cache"]
    if timing == "auto":
        module = "tensorrt_rtx" if backend == "tensorrt_rtx" else "tensorrt"
        timing = str(cache_root(cfg.cache) / "tensorrt" / timing_cache_name(
            installed_version(module) or str(major), compute_capability()))
    disabled = ort["disabled_optimizers"]
    plan = EnginePlan(backend=backend, reason=reason, precision=engine["precision"], tensorrt_version=major,
                      strongly_typed=strongly_typed, tensorrt=trt, onnxruntime=ort,
                      disabled_asked=None if disabled is None else tuple(disabled),
                      timing_cache=timing if backend != "onnxruntime" else None,
                      fusion_choice=fusion, layout=layout, cuda_graph=bool(cuda_graph))
    plan = _resolve_precision(plan, cfg.quantize.tool.value)
    if plan.precision == "best":
        plan = dataclasses.replace(plan, search=_search_space(backend, ort["providers"]))
    return plan


def custom_op_libraries(cfg: DictConfig) -> list[str]:
    """The onnxruntime custom-op libraries the recipe registers (the import lint reads them before a plan)."""
    return list(cfg.engine.onnxruntime.custom_op_libraries)


def _disabled_optimizers(chosen: Optional[tuple], conversion: str) -> list[str]:
    """The transformers the engine is built and loaded without (null: int8 Q/DQ skips QDQ propagation)."""
    if chosen is not None:
        return list(chosen)
    return list(INT8_DISABLED_OPTIMIZERS) if conversion == "int8" else []


# --- lint -----------------------------------------------------------------------------------

def plan_problems(cfg: DictConfig) -> list[Problem]:
    """Every engine problem of a typed recipe, per backend and TensorRT version, with the fix."""
    engine, problems = cfg.engine, []
    requested = engine.backend.value
    if requested in ("tensorrt", "tensorrt_rtx"):
        problems += _builder_problems(requested)
    asked_providers = engine.onnxruntime.providers
    if asked_providers is not None:
        problems += provider_problems(list(asked_providers), has_cuda_gpu())
        if problems:
            return problems  # the plan below resolves the names
    plan = resolve(cfg)
    allowed = allowed_precisions(plan) + ("best",)
    if plan.precision not in allowed:
        where = " on the CPU" if plan.backend == "onnxruntime" and not plan.gpu else ""
        problems.append(Problem("engine.precision", f"the {plan.backend} backend does not build {plan.precision} "
                                f"engines{where}", plan.precision, ", ".join(allowed),
                                fix=f"use engine.precision={' or '.join(allowed)}"))
    elif plan.tool != "none" and plan.conversion not in TOOL_CONVERSIONS[plan.tool]:
        problems.append(Problem("quantize.tool", f"{plan.tool} does not convert a graph to {plan.conversion}",
                                plan.tool, ", ".join(t for t, c in TOOL_CONVERSIONS.items() if plan.conversion in c),
                                fix="use quantize.tool=modelopt (or auto)"))
    elif plan.precision == "tf32":
        problems += _tf32_problems(plan)
    if engine.tensorrt.tf32 is not None and bool(engine.tensorrt.tf32) != (plan.precision == "tf32") \
            and plan.precision != "best":
        problems.append(Problem("engine.tensorrt.tf32", "TF32 is a reduced precision: it follows engine.precision "
                                "(on for tf32 only; fp32 means strict fp32)", engine.tensorrt.tf32, "null (follows engine.precision)",
                                fix="remove engine.tensorrt.tf32, and use engine.precision=tf32 to ask for TF32"))
    if "use_tf32" in engine.onnxruntime.cuda_options:
        problems.append(Problem("engine.onnxruntime.cuda_options.use_tf32", "TF32 follows engine.precision",
                                engine.onnxruntime.cuda_options.use_tf32, "no use_tf32 key (it follows engine.precision)",
                                fix="remove it, and use engine.precision=tf32 to ask for TF32"))
    if plan.tool == "modelopt" and installed_version("modelopt") is None:
        problems.append(Problem("engine.precision", f"{plan.precision} is converted by ModelOpt here, which is not "
                                "installed", plan.precision, "quantize.tool=onnxruntime, or ModelOpt installed",
                                fix='pip install -e ".[modelopt]" (from a checkout), or use quantize.tool=onnxruntime'))
    if cfg.data.calibration_size < 1:
        problems.append(Problem("data.calibration_size", "must be positive", cfg.data.calibration_size, "1, 2, ...",
                                fix="e.g. data.calibration_size=256"))
    threads = plan.intra_op_threads
    if not (threads == "auto" or (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 0)):
        problems.append(Problem("engine.onnxruntime.intra_op_threads", "a thread count or auto", threads,
                                "0 (onnxruntime's default), 1, 2, ..., auto",
                                fix="e.g. engine.onnxruntime.intra_op_threads=auto"))
    for i, library in enumerate(plan.onnxruntime["custom_op_libraries"]):
        if not Path(library).expanduser().is_file():
            problems.append(Problem(f"engine.onnxruntime.custom_op_libraries[{i}]", "library not found", library,
                                "paths of existing custom-op libraries (.so)", fix="give the library's absolute path"))
    problems += _runtime_problems(engine.onnxruntime, plan)
    if plan.nvidia and cfg.framework.value == "onnx" and cfg.model.path:  # what the parser refuses, before any work


        problems += import_problems(onnx.load(str(Path(cfg.model.path).expanduser()), load_external_data=False),
                                    plan.tensorrt_version, plan.backend)
    if plan.nvidia or requested == "auto":
        problems += _removed_option_problems(engine.tensorrt, plan.tensorrt_version, engine.precision.value)
        problems += tensorrt_problems(engine.tensorrt, plan)
    return problems


def _runtime_problems(o: Any, plan: EnginePlan) -> list[Problem]:
    """The CUDA provider's runtime settings asked for where they cannot apply."""
    problems = []
    if o.cuda_graph and not plan.cuda_provider:
        problems.append(Problem("engine.onnxruntime.cuda_graph", "CUDA graphs need onnxruntime's CUDA provider, and "
                                f"the engine is {plan.backend} on {', '.join(plan.providers)}", True,
                                "null, false (true needs engine.onnxruntime.providers=[cuda, cpu] and a GPU)",
                                fix="remove engine.onnxruntime.cuda_graph, or run on a CUDA machine"))
    if o.fusion and (plan.backend != "onnxruntime" or plan.precision not in ("fp16", "best")):
        problems.append(Problem("engine.onnxruntime.fusion", "onnxruntime's transformer fusions are made before an "
                                "fp16 conversion, for onnxruntime engines (TensorRT cannot read the fused ops)", True,
                                "null, false; true with engine.backend=onnxruntime and engine.precision=fp16 or best",
                                fix="remove engine.onnxruntime.fusion, or set engine.precision=fp16"))
    if o.layout.value != "auto" and not plan.cuda_provider:
        problems.append(Problem("engine.onnxruntime.layout", "the layout is a CUDA provider setting", o.layout.value,
                                "auto (on the CPU)", fix="remove engine.onnxruntime.layout"))
    return problems


def _builder_problems(requested: str) -> list[Problem]:
    """An NVIDIA builder asked for by name that cannot run here: not installed, no GPU, or (TensorRT-RTX) a GPU
    its runtime refuses."""
    problems = []
    cc = compute_capability()
    if requested == "tensorrt_rtx" and not rtx_runs_on(cc):
        problems.append(Problem("engine.backend", f"TensorRT-RTX's runtime does not run on this GPU (compute capability "
                                f"{cc}); it runs compute capabilities {', '.join(RTX_RUNTIME_CAPABILITIES)} and above "
                                "12.1 (RTX and Ampere GPUs, not Hopper or Volta)", requested,
                                "auto, onnxruntime, tensorrt, tensorrt_rtx",
                                fix="use engine.backend=auto (TensorRT, else onnxruntime on the CUDA provider)"))
        return problems
    ok, why = builder_status(requested)
    if not ok:
        package = '-e ".[tensorrt-rtx]"' if requested == "tensorrt_rtx" else \
            '-e ".[tensorrt]" --extra-index-url https://pypi.nvidia.com'
        problems.append(Problem("engine.backend", f"{requested} cannot run here: {why}", requested,
                                "auto, onnxruntime, tensorrt, tensorrt_rtx",
                                fix=f"on a CUDA machine, from a checkout: pip install {package} (installed: "
                                    f"'compiler[{requested.replace('_', '-')}]'); or use engine.backend=auto"))
    return problems


def allowed_precisions(plan: EnginePlan) -> tuple[str, ...]:
    """The precisions this plan's backend builds where it runs (onnxruntime: more on a GPU provider)."""
    if plan.backend == "onnxruntime" and plan.gpu:
        return ONNXRUNTIME_GPU_PRECISIONS
    return BACKEND_PRECISIONS[plan.backend]


def _tf32_problems(plan: EnginePlan) -> list[Problem]:
    """tf32 exists only on a GPU with TF32 tensor cores."""
    cc = compute_capability()
    if cc is not None and float(cc) < TF32_MIN_CAPABILITY:
        return [Problem("engine.precision", f"tf32 needs compute capability {TF32_MIN_CAPABILITY} or more; this GPU "
                        f"has {cc}", "tf32", "fp32, fp16 on this GPU", fix="use engine.precision=fp32 or fp16")]
    return []


def _removed_option_problems(t: Any, major: int, precision: str) -> list[Problem]:
    """Weak-typing options the planned TensorRT version does not have, or a strongly typed build ignores."""
    used = [key for key, on in (("engine.tensorrt.strongly_typed", t.strongly_typed is False),
                                ("engine.tensorrt.precision_constraints", t.precision_constraints.value != "none"),
                                ("engine.tensorrt.layer_precisions", bool(t.layer_precisions)),
                                ("engine.tensorrt.calibration_cache", t.calibration_cache is not None)) if on]
    if major >= 11:
        return [Problem(key, f"removed in TensorRT {major}: {REMOVED_IN_TENSORRT_11[key][0]}", _value(t, key), "the TensorRT 11 options",
                        fix=f"replace it: {REMOVED_IN_TENSORRT_11[key][1]}") for key in used]
    if t.strongly_typed is not False:
        return [Problem(key, "a weak-typing option, and the network is strongly typed", _value(t, key),
                        "strongly typed options",
                        fix="set engine.tensorrt.strongly_typed=false (TensorRT 10 only), or "
                            + REMOVED_IN_TENSORRT_11[key][1]) for key in used]
    if t.calibration_cache is not None and precision != "int8":
        return [Problem("engine.tensorrt.calibration_cache", "the calibrator makes int8 engines only",
                        t.calibration_cache, "a calibration cache with engine.precision=int8", fix="set engine.precision=int8, or remove calibration_cache")]
    return []


def _value(t: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    value = t[key.rsplit(".", 1)[1]]
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value)
    return getattr(value, "value", value)
