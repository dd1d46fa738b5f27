"""The recipe's `model` section: IO spec plus a layer list or an allow-listed factory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING


@dataclass
class InputSpec:
    """The model input, written once: it feeds export, engine profiles and verification."""

    name: str = "input"
    shape: List[int] = MISSING   # one sample, channels first, batch excluded: [C, H, W] or [F]
    dtype: str = "float32"


@dataclass
class OutputSpec:
    name: str = "logits"


@dataclass
class ModelConfig:
    input: InputSpec = field(default_factory=InputSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    layers: List[Any] = field(default_factory=list)
    factory: Optional[Any] = None   # {_target_: allow-listed callable, **kwargs} instead of `layers`
    path: Optional[str] = None      # framework `onnx`: an existing ONNX file to start from
