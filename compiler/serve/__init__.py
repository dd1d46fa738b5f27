"""Serving: the compiled engine as a Triton model repository (`serve.target: triton`).

`settings.py` resolves the `serve` section against the IO spec and the EnginePlan, once, and says what Triton
cannot express; `triton_config.py` turns that into the model config; `twin.py` writes the Python-backend twin that
serves the same file here; `server.py` runs a local Triton server; the stage (stages/serve.py) writes the folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional


class ServeTarget(Enum):
    none = "none"        # no serving package
    triton = "triton"    # triton/<model>/config.pbtxt + 1/model.onnx (model.plan for a TensorRT engine)


@dataclass
class DynamicBatchingConfig:
    enabled: bool = True
    max_queue_delay_us: int = 100             # how long a request waits for others to join its batch
    preferred_batch_sizes: List[int] = field(default_factory=list)   # empty: as large as the queue gives


@dataclass
class ServeConfig:
    target: ServeTarget = ServeTarget.none
    model_name: Optional[str] = None          # the model's folder and name in Triton; null: the recipe's name
    # auto: the batch dim's max where that dim leads every input and output, else 0 (no batching, full dims)
    max_batch_size: Any = "auto"
    dynamic_batching: DynamicBatchingConfig = field(default_factory=DynamicBatchingConfig)
    instances: Any = "auto"                   # per device; auto: 1 (one session already uses every core / the GPU)
    warmup: bool = True                       # warm-up requests at the min and max batch before the model is ready
    versions: int = 1                         # version policy: serve the latest N versions
