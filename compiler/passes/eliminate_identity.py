"""Removes Identity nodes and inference-time Dropout by rewiring their consumers to their input."""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from compiler.passes._gs import on_graph

_NOOPS = ("Identity", "Dropout")


def _bypass(graph: gs.Graph) -> None:
    outputs = {id(t) for t in graph.outputs}
    for node in [n for n in graph.nodes if n.op in _NOOPS]:
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
            continue  # its mask is used
        src, dst = node.inputs[0], node.outputs[0]
        to_output = id(dst) in outputs
        if to_output and (isinstance(src, gs.Constant) or not src.inputs or id(src) in outputs):
            continue  # a graph output must stay a distinct tensor made by a node
        node.inputs.clear()
        node.outputs.clear()
        if to_output:  # the producer writes the graph output directly; src's readers read it
            producer = src.inputs[0]
            producer.outputs[producer.outputs.index(src)] = dst
            keep, drop = dst, src
        else:
            keep, drop = src, dst
        for consumer in list(drop.outputs):
            consumer.inputs[consumer.inputs.index(drop)] = keep
    graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, _bypass)
