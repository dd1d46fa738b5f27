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


@dataclass
class OnnxRuntimeConfig:
    optimization_level: OptimizationLevel = OptimizationLevel.all
    intra_op_threads: int = 0          # 0: onnxruntime's default (one per physical core)
    inter_op_threads: int = 0
    providers: List[str] = field(default_factory=lambda: ["CPUExecutionProvider"])


@dataclass
class EngineConfig:
    backend: Backend = Backend.auto
    precision: Precision = Precision.fp32
    onnxruntime: OnnxRuntimeConfig = field(default_factory=OnnxRuntimeConfig)
    # input name -> {min, opt, max} full shapes (batch included); derived from the IO spec when empty
    profiles: Dict[str, Any] = field(default_factory=dict)
    max_batch: int = 64                # upper bound of the derived dynamic-batch profile


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


def choose_backend(engine_cfg: Any) -> BackendChoice:
    requested = engine_cfg.backend.value
    if requested != "auto":
        return BackendChoice(requested, "requested by engine.backend")
    ok, why = tensorrt_status()
    if ok:
        return BackendChoice("tensorrt", f"auto: {why}")
    return BackendChoice("onnxruntime", f"auto: TensorRT cannot run here ({why}); using onnxruntime")


ENGINE_FILES = {"onnxruntime": "model.ort", "tensorrt": "model.engine"}
