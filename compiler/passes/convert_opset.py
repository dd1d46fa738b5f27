"""Converts the model to another opset (onnx.version_converter)."""

from __future__ import annotations

import onnx
from onnx import version_converter


def apply(model: onnx.ModelProto, version: int = 17) -> onnx.ModelProto:
    return version_converter.convert_version(model, int(version))
