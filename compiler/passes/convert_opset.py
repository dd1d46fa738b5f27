"""Converts the model to another opset (onnx.version_converter)."""

from __future__ import annotations

from compiler.heavy import onnx
from compiler.passes.args import Arg, PassInfo


MAX_OPSET = 23   # the newest opset onnx's version converter and onnxruntime take; 7 is the converter's oldest
PASS = PassInfo(
    name="convert_opset",
    summary="convert to another opset",
    args={
        "version": Arg("int", 17, minimum=7, maximum=MAX_OPSET, help="the target opset"),
    },
)


def apply(model: onnx.ModelProto, version: int = 17) -> onnx.ModelProto:
    return onnx.version_converter.convert_version(model, int(version))
