"""The recipe's `model` section: the IO spec (inputs, outputs, named dims) plus a layer list or a factory."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional


class DType(Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"
    int64 = "int64"
    int32 = "int32"
    int8 = "int8"
    uint8 = "uint8"
    bool = "bool"
    string = "string"   # ONNX files only (scikit-learn pipelines): fed from `values`, or the graph's categories


@dataclass
class InputSpec:
    """One model input, written once: it feeds export, engine profiles, verification and calibration."""

    name: str = "input"
    # batch included, channels first; ints are fixed sizes, strings name a dim of `model.dims`.
    # null only for framework onnx, where the file gives the shape
    shape: Optional[List[Any]] = None
    dtype: Optional[DType] = None        # null: float32 (framework onnx: the file's)
    # [low, high): values of integer/bool inputs (and uniform floats); a bound may name a dim: [0, batch]
    range: Optional[List[Any]] = None
    values: Optional[List[Any]] = None   # the only values it takes (an enum-like input: [8000, 16000])


@dataclass
class OutputSpec:
    name: str = "logits"
    atol: Optional[float] = None   # this output's tolerance in the ledger; null: verify.atol
    rtol: Optional[float] = None
    # this output's budgets in the agreement gate (reduced precision without labels); null: verify.agreement
    rel_l2: Optional[float] = None
    cosine: Optional[float] = None
    argmax: Optional[float] = None


@dataclass
class ModelConfig:
    inputs: List[InputSpec] = field(default_factory=list)
    outputs: List[OutputSpec] = field(default_factory=list)
    # each named dim once: [min, opt, max], shared by every input that names it
    dims: Dict[str, Any] = field(default_factory=lambda: {"batch": [1, 32, 64]})
    # several optimization profiles: each maps dim names to [min, opt, max] (others from `dims`), or an input
    # name to explicit {min, opt, max} shapes. Empty: one profile, `dims`
    profiles: List[Any] = field(default_factory=list)
    label_output: Optional[str] = None   # the output that labels score (loss, accuracy); null: the first
    layers: List[Any] = field(default_factory=list)
    factory: Optional[Any] = None   # {_target_: allow-listed callable, **kwargs} instead of `layers`
    path: Optional[str] = None      # framework `onnx`: an existing ONNX file to start from
