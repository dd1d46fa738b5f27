"""The recipe's `engine` section and the choice of backend.

`auto` picks TensorRT where it can run (the Python package importable and a CUDA GPU
present), else onnxruntime; the choice and its reason go into the report.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional


class Backend(Enum):
    auto = "auto"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"


class Precision(Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"
    fp8 = "fp8"
    best = "best"


class OptimizationLevel(Enum):
    disable = "disable"
    basic = "basic"
    extended = "extended"
    all = "all"


class OrtFormat(Enum):
    onnx = "onnx"   # model.opt.onnx: the optimised graph as ONNX; byte-for-byte reproducible, any ONNX tool reads it
    ort = "ort"     # model.ort: ORT format (onnxruntime-mobile/minimal builds); its bytes vary from build to build


@dataclass
class OnnxRuntimeConfig:
    format: OrtFormat = OrtFormat.onnx
    optimization_level: OptimizationLevel = OptimizationLevel.all
    intra_op_threads: int = 0          # 0: onnxruntime's default (one per physical core)
    inter_op_threads: int = 0
    providers: List[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    # graph transformers to skip at build and load; null = auto: int8 skips QDQPropagationTransformer (below)
    disabled_optimizers: Optional[List[str]] = None
    custom_op_libraries: List[str] = field(default_factory=list)   # shared libraries of custom ops to register


class PrecisionConstraints(Enum):
    none = "none"
    prefer = "prefer"
    obey = "obey"


class HardwareCompatibility(Enum):
    none = "none"
    ampere_plus = "ampere_plus"
    same_compute_capability = "same_compute_capability"


class ProfilingVerbosity(Enum):
    layer_names_only = "layer_names_only"
    detailed = "detailed"
    none = "none"


class TacticSource(Enum):
    cublas = "cublas"
    cublas_lt = "cublas_lt"
    cudnn = "cudnn"
    edge_mask_convolutions = "edge_mask_convolutions"
    jit_convolutions = "jit_convolutions"


@dataclass
class TensorRTConfig:
    """TensorRT builder flags; each maps to one Polygraphy argument in backends/tensorrt_plan.py."""

    strongly_typed: bool = False              # types come from the ONNX model (QDQ / fp16 models)
    tf32: bool = True                         # TensorRT's own default; false = --noTF32
    workspace_mib: Optional[int] = None       # workspace memory pool limit
    builder_optimization_level: Optional[int] = None   # 0..5; TensorRT's default is 3
    timing_cache: Optional[str] = "auto"      # auto: <cache dir>/tensorrt/timing.cache, shared by a sweep; null: off
    tactic_sources: Optional[List[TacticSource]] = None  # null: TensorRT's default set
    precision_constraints: PrecisionConstraints = PrecisionConstraints.none
    layer_precisions: Dict[str, str] = field(default_factory=dict)  # layer-name glob -> fp32|fp16|bf16|int8|fp8
    sparsity: bool = False                    # 2:4 structured-sparse weights
    version_compatible: bool = False
    hardware_compatibility: HardwareCompatibility = HardwareCompatibility.none
    dla_core: Optional[int] = None            # build for this DLA core, with GPU fallback
    max_aux_streams: Optional[int] = None
    profiling_verbosity: ProfilingVerbosity = ProfilingVerbosity.layer_names_only
    refittable: bool = False
    plugins: List[str] = field(default_factory=list)   # plugin libraries to load
    calibration_cache: Optional[str] = None   # int8 without QDQ: default calibration.cache in the run dir


@dataclass
class EngineConfig:
    backend: Backend = Backend.auto
    precision: Precision = Precision.fp32
    onnxruntime: OnnxRuntimeConfig = field(default_factory=OnnxRuntimeConfig)
    tensorrt: TensorRTConfig = field(default_factory=TensorRTConfig)
    # optimization profiles come from the IO spec: model.dims and model.profiles


@dataclass(frozen=True)
class BackendChoice:
    name: str
    reason: str


def tensorrt_status() -> tuple[bool, str]:
    """Whether TensorRT can build here, without importing it; the reason when it cannot."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the `tensorrt` Python package is not installed"
    has_gpu = os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None
    if not has_gpu:
        return False, "no CUDA GPU was found (no /dev/nvidia0, no nvidia-smi)"
    return True, "TensorRT is importable and a CUDA GPU is present"


def converted_precision(engine_cfg: Any) -> Optional[str]:
    """The precision the quantize stage writes into the ONNX model itself, or None when it does not run.

    int8 always (QDQ); fp16 for typed backends, which take types from the model: onnxruntime, and
    TensorRT with strongly_typed. Plain TensorRT fp16 is a builder flag on the fp32 model.
    """
    precision = engine_cfg.precision.value
    if precision == "int8":
        return "int8"
    if precision == "fp16" and (choose_backend(engine_cfg).name == "onnxruntime" or engine_cfg.tensorrt.strongly_typed):
        return "fp16"
    return None


def choose_backend(engine_cfg: Any) -> BackendChoice:
    requested = engine_cfg.backend.value
    if requested != "auto":
        return BackendChoice(requested, "requested by engine.backend")
    ok, why = tensorrt_status()
    if ok:
        return BackendChoice("tensorrt", f"auto: {why}")
    return BackendChoice("onnxruntime", f"auto: TensorRT cannot run here ({why}); using onnxruntime")




def engine_key(engine_cfg: Any) -> dict[str, Any]:
    """What of `engine` changes what the chosen backend builds and runs: the backend `auto` resolves to here,
    the precision, and that backend's own section. The other backend's flags do not enter a cache key."""
    from omegaconf import OmegaConf

    backend = choose_backend(engine_cfg).name
    section = "tensorrt" if backend == "tensorrt" else "onnxruntime"
    full = OmegaConf.to_container(engine_cfg, resolve=True, enum_to_str=True)
    return {"backend": backend, "precision": full["precision"], section: full[section]}
