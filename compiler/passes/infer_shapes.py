"""Annotates tensors with inferred shapes and types (onnx's strict shape inference)."""

from __future__ import annotations

from compiler.heavy import onnx
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="infer_shapes",
    summary="annotate every tensor with its inferred shape and type",
)


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
