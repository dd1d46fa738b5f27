"""torch.onnx.export with the recipe's exporter and opset; names and dynamic dims from the IO spec."""

from __future__ import annotations

from typing import TYPE_CHECKING

import contextlib
import io as _io
import warnings
from pathlib import Path

import numpy as np
import torch

from compiler.errors import StageError
from compiler.frameworks.torch.builder import RecipeModule
from compiler.frameworks.torch.runtime import load_trained
from compiler.heavy import onnx
from compiler.iospec import IOSpec
from compiler.onnx_files import has_external_data, save_model

if TYPE_CHECKING:
    from omegaconf import DictConfig


def sample_inputs(io: IOSpec) -> tuple[torch.Tensor, ...]:
    """Tracing inputs at the opt shapes, with a batch of 2 so that no exporter specialises it to 1."""
    shapes = io.shapes(0, "opt", batch=2 if io.batch_dim else None)
    feed = io.random_feed(np.random.default_rng(0), shapes)
    return tuple(torch.from_numpy(feed[name]) for name in io.input_names)


def dynamic_shapes(io: IOSpec) -> tuple[dict[int, object], ...]:
    """dynamo's dynamic_shapes: every named dim is Dim.AUTO (torch.export infers its range and equalities;
    named Dims with min 1 fail its guards). The recipe's dim names are put back after export."""
    return tuple({axis: torch.export.Dim.AUTO for axis, d in enumerate(t.shape) if isinstance(d, str)}
                 for t in io.inputs)


def export(cfg: DictConfig, io: IOSpec, weights: Path, out: Path) -> None:
    model = load_trained(cfg, io, weights)
    dynamo = cfg.export.exporter.value == "dynamo"
    kwargs: dict = {"input_names": io.input_names, "output_names": io.output_names, "opset_version": cfg.export.opset}
    if dynamo:
        kwargs["dynamic_shapes"] = dynamic_shapes(io)
    else:
        kwargs["dynamic_axes"] = io.dynamic_axes()
    sample = sample_inputs(io)
    target = _unwrapped(model, sample)
    if dynamo and _takes_varargs(target):  # forward(*inputs): one nested entry for the star argument
        kwargs["dynamic_shapes"] = (kwargs["dynamic_shapes"],)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(target, sample, str(out), dynamo=dynamo, **kwargs)
    except Exception as exc:  # the exporters raise many types; all mean the same to the user
        first = " ".join(str(exc).split())[:600]
        raise StageError("export", f"torch.onnx.export ({cfg.export.exporter.value}) failed: {first}",
                         fix="try export.exporter=dynamo or torchscript, or another export.opset") from exc
    name_dims(out, io)


def _unwrapped(model: RecipeModule, sample: tuple) -> torch.nn.Module:
    """The user's own module when it already returns exactly the listed outputs: node names then follow its
    layout (`/0/Conv`, not `/inner/inner.0/Conv`), which recipes name in keep_fp32 and surgery passes."""
    with torch.no_grad():
        result = model.inner(*sample)
    n = len(model.output_names)
    plain = (isinstance(result, torch.Tensor) and n == 1) or (
        type(result) in (tuple, list) and len(result) == n and all(isinstance(t, torch.Tensor) for t in result))
    return model.inner if plain else model


def _takes_varargs(module: torch.nn.Module) -> bool:
    import inspect

    return any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters.values())


def name_dims(path: Path, io: IOSpec) -> None:
    """Give the graph's dynamic dims the recipe's names (dynamo names them after sympy symbols: s0, s1...)."""

    model = onnx.load(str(path))
    spec = {t.name: t.shape for t in io.inputs}
    for value in model.graph.input:
        for axis, d in enumerate(value.type.tensor_type.shape.dim):
            wanted = spec.get(value.name, ())[axis] if axis < len(spec.get(value.name, ())) else None
            if isinstance(wanted, str):
                d.dim_param = wanted
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        if io.batch_dim and dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = io.batch_dim
    save_model(model, path, external=True if has_external_data(path) else None)
