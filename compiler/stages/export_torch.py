"""torch.onnx.export with the recipe's exporter, opset, IO names and dynamic batch."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch

from compiler.errors import StageError
from compiler.stages.train_torch import load_trained


def export(cfg, weights: Path, out: Path) -> None:
    model = load_trained(cfg, weights)
    spec = cfg.model
    sample = torch.zeros(2, *spec.input.shape, dtype=getattr(torch, spec.input.dtype))
    in_name, out_name = spec.input.name, spec.output.name
    dynamo = cfg.export.exporter.value == "dynamo"
    kwargs: dict = {"input_names": [in_name], "output_names": [out_name], "opset_version": cfg.export.opset}
    if cfg.export.dynamic_batch:
        if dynamo:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim.DYNAMIC},)
        else:
            kwargs["dynamic_axes"] = {in_name: {0: "batch"}, out_name: {0: "batch"}}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (sample,), str(out), dynamo=dynamo, **kwargs)
    except Exception as exc:  # the exporters raise many types; all mean the same to the user
        raise StageError("export", f"torch.onnx.export ({cfg.export.exporter.value}) failed: {exc}",
                         fix="try export.exporter=dynamo or torchscript, or another export.opset") from exc
    if dynamo:
        _rename_batch_dim(out)


def _rename_batch_dim(path: Path) -> None:
    """The dynamo exporter names dims after sympy symbols; call the batch dim 'batch' like TorchScript does."""
    import onnx

    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = "batch"
    onnx.save(model, str(path))
