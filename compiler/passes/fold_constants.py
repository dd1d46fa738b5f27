"""Constant folding (with onnxruntime) through onnx-graphsurgeon."""

from __future__ import annotations

import onnx

from compiler.passes._gs import on_graph


def apply(model: onnx.ModelProto, fold_shapes: bool = True, size_threshold: int | None = None) -> onnx.ModelProto:
    return on_graph(model, lambda g: g.fold_constants(fold_shapes=fold_shapes, size_threshold=size_threshold,
                                                       error_ok=False).cleanup())
