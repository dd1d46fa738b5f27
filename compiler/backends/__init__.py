"""The recipe's `engine` section (schema only).

Nothing reads this section but `compiler/plan.py`, which resolves it once, at lint, into the
EnginePlan every stage, key, report and reproducer reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional


class Backend(Enum):
    auto = "auto"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"
    tensorrt_rtx = "tensorrt_rtx"   # NVIDIA's builder for RTX GPUs (POLYGRAPHY_USE_TENSORRT_RTX=1); always strongly typed


class Precision(Enum):
    fp32 = "fp32"   # strict fp32: TF32 off in the reference and the engine (numerics.py)
    tf32 = "tf32"   # fp32 layers in TF32 on GPUs of compute capability 8.0+ (TensorRT's flag, onnxruntime CUDA's option)
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"
    fp8 = "fp8"
    best = "best"   # build every precision the backend runs well; keep the fastest within the accuracy budget


class OptimizationLevel(Enum):
    disable = "disable"
    basic = "basic"
    extended = "extended"
    all = "all"


class OrtFormat(Enum):
    onnx = "onnx"   # model.opt.onnx: the optimised graph as ONNX; byte-for-byte reproducible, any ONNX tool reads it
    ort = "ort"     # model.ort: ORT format (onnxruntime-mobile/minimal builds); its bytes vary from build to build


class Layout(Enum):
    auto = "auto"   # NHWC kernels for models with convolutions, on the CUDA provider
    nchw = "nchw"
    nhwc = "nhwc"


@dataclass
class OnnxRuntimeConfig:
    format: OrtFormat = OrtFormat.onnx
    optimization_level: OptimizationLevel = OptimizationLevel.all
    intra_op_threads: Any = 0          # 0: onnxruntime's default (one per physical core); auto: measured, fastest kept
    inter_op_threads: int = 0
    # execution providers in order, short (cpu, cuda, tensorrt) or full names; null: cuda, cpu where
    # onnxruntime-gpu and a CUDA GPU are present, else cpu (backends/providers.py)
    providers: Optional[List[str]] = None
    # extra CUDA provider options (prefer_nhwc, enable_cuda_graph, cudnn_conv_algo_search, ...); TF32 is not one:
    # it follows engine.precision
    cuda_options: Dict[str, Any] = field(default_factory=dict)
    # graph transformers to skip at build and load; null = auto: int8 skips QDQPropagationTransformer (below)
    disabled_optimizers: Optional[List[str]] = None
    custom_op_libraries: List[str] = field(default_factory=list)   # shared libraries of custom ops to register
    # the CUDA provider's runtime settings (plan.py decides; precision=best searches them):
    fusion: Optional[bool] = None       # transformer fusions before an fp16 conversion; null: on the CUDA provider
    layout: Layout = Layout.auto        # convolution kernels' layout (the provider's prefer_nhwc)
    cuda_graph: Optional[bool] = None   # capture the engine as CUDA graphs (one per input shape); null: off (best tries)


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

    version: Optional[int] = None             # TensorRT major version to plan for; null: the installed one, else 11
    strongly_typed: Optional[bool] = None     # null: true. Types come from the ONNX graph; false (weak typing) is 10 only
    tf32: Optional[bool] = None               # null: follows engine.precision (on for tf32 only); see numerics.py
    workspace_mib: Optional[int] = None       # workspace memory pool limit
    builder_optimization_level: Optional[int] = None   # 0..5; TensorRT's default is 3
    timing_cache: Optional[str] = "auto"      # auto: <cache dir>/tensorrt/timing-<version>-sm<cc>.cache, shared; null: off
    tactic_sources: Optional[List[TacticSource]] = None  # null: TensorRT's default set
    precision_constraints: PrecisionConstraints = PrecisionConstraints.none   # weak typing, TensorRT 10 only
    layer_precisions: Dict[str, str] = field(default_factory=dict)  # glob -> fp32|fp16|bf16|int8|fp8; 10, weak only
    sparsity: bool = False                    # 2:4 structured-sparse weights
    version_compatible: bool = False
    hardware_compatibility: HardwareCompatibility = HardwareCompatibility.none
    dla_core: Optional[int] = None            # build for this DLA core, with GPU fallback
    max_aux_streams: Optional[int] = None
    profiling_verbosity: ProfilingVerbosity = ProfilingVerbosity.layer_names_only
    refittable: bool = False
    plugins: List[str] = field(default_factory=list)   # plugin libraries to load
    calibration_cache: Optional[str] = None   # set: int8 by TensorRT 10's calibrator (weak typing), not Q/DQ


@dataclass
class EngineConfig:
    backend: Backend = Backend.auto
    precision: Precision = Precision.fp32
    onnxruntime: OnnxRuntimeConfig = field(default_factory=OnnxRuntimeConfig)
    tensorrt: TensorRTConfig = field(default_factory=TensorRTConfig)
    # optimization profiles come from the IO spec: model.dims and model.profiles
