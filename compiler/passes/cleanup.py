"""Removes dead nodes, unused initializers and unused graph inputs."""

from __future__ import annotations

import onnx

from compiler.passes._gs import on_graph


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, lambda g: g.cleanup(remove_unused_graph_inputs=True, remove_unused_node_outputs=True))
