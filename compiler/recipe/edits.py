"""Every write into a composed recipe, in one place. They all happen while the recipe is checked (cli's
check_recipe), before it is frozen into a `Resolved`; after that the config is read-only."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

Change = dict[str, Any]  # the input-domain probe's {"dims": {name: [min,opt,max]}, "values": {input: [..]}}


def fill_io(cfg: DictConfig, inputs: list, outputs: list, dims: Mapping[str, Any]) -> None:
    """An ONNX recipe's inputs, outputs and dims, as read from its file and the recipe (onnx_io)."""
    cfg.model.inputs = inputs
    cfg.model.outputs = outputs
    cfg.model.dims = dict(dims)


def set_dims(cfg: DictConfig, dims: Mapping[str, Sequence[int]]) -> None:
    """Dims changed to fit this machine's memory (activation_memory) or to a domain the file accepts."""
    for name, value in dims.items():
        cfg.model.dims[name] = list(value)


def apply_change(cfg: DictConfig, change: Change) -> None:
    """A probe's alternative: dims, and integer inputs taking fixed values instead of a range."""
    set_dims(cfg, change.get("dims", {}))
    for spec in cfg.model.inputs:
        if spec.name in change.get("values", {}):
            spec["values"], spec["range"] = list(change["values"][spec.name]), None


def with_change(cfg: DictConfig, change: Change) -> DictConfig:
    """A writable copy of the recipe with a probe's alternative applied; the recipe itself (read-only once
    resolved) is untouched."""
    trial = copy.deepcopy(cfg)
    OmegaConf.set_readonly(trial, False)
    apply_change(trial, change)
    return trial
