"""Sorts nodes topologically (required by ONNX, and by passes that add nodes)."""

from __future__ import annotations

import onnx

from compiler.passes._gs import on_graph


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, lambda g: g.toposort())
