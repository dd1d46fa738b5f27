"""Annotates tensors with inferred shapes and types (onnx's strict shape inference)."""

from __future__ import annotations

import onnx


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
