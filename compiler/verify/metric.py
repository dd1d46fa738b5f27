"""The task metric: how the output labels score is scored (top-1 by default, or an allow-listed hook).

The quantize stage's accuracy budget and verification read it from here; which output that is
(`iospec.label_output`) training reads too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from compiler.iospec import IOSpec, batch_size, label_output, slice_batch
from compiler.model.factory import instantiate_factory

if TYPE_CHECKING:
    from omegaconf import DictConfig

Metric = Callable[[Mapping[str, np.ndarray], np.ndarray], float]
Infer = Callable[[dict], Mapping[str, Any]]


def top1(output: str) -> Metric:
    def metric(outputs: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
        return float((np.asarray(outputs[output]).argmax(1) == labels).mean()) if len(labels) else 0.0
    return metric


def metric_of(cfg: DictConfig, io: IOSpec) -> Metric:
    """`verify.metric` (a `_target_` called with its kwargs, returning fn(outputs, labels) -> float), else top-1."""
    if cfg.verify.metric is None:
        return top1(label_output(cfg, io))

    return instantiate_factory(cfg.verify.metric, "verify.metric")


def evaluate(infer: Infer, x: Mapping[str, np.ndarray], labels: np.ndarray, metric: Metric, batch: int = 256) -> float:
    """The metric over `x`, run in batches of at most `batch` through `infer` (a feed dict -> outputs by name)."""
    pieces: dict[str, list] = {}
    for start in range(0, batch_size(x), batch):
        for name, value in infer(slice_batch(x, start, start + batch)).items():
            pieces.setdefault(name, []).append(np.asarray(value))
    return metric({k: np.concatenate(v) for k, v in pieces.items()}, labels)
