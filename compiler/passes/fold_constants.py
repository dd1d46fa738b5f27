"""Constant folding (with onnxruntime) through onnx-graphsurgeon."""

from __future__ import annotations

import onnx

from compiler.passes._gs import on_graph


def apply(model: onnx.ModelProto, fold_shapes: bool = True, size_threshold: int | None = None) -> onnx.ModelProto:
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # graphsurgeon's own sessions: its optimizer's notes are not ours
    return on_graph(model, lambda g: g.fold_constants(fold_shapes=fold_shapes, size_threshold=size_threshold,
                                                       error_ok=False).cleanup())
