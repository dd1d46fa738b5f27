"""Sorts nodes topologically (required by ONNX, and by passes that add nodes)."""

from __future__ import annotations

from compiler.heavy import onnx
from compiler.passes._gs import on_graph
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="toposort",
    summary="sort nodes topologically",
)


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, lambda g: g.toposort())
