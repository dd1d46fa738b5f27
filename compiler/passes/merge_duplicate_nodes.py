"""Common-subexpression elimination: nodes with the same op, attributes and inputs compute the same values.

The second of two such nodes is dropped and its consumers read the first one's outputs. Identical
initializers must be shared first (dedup_constants), so that two convolutions over copies of one
weight count as the same. Nondeterministic ops (random generators) and nodes with subgraphs are kept.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from compiler.passes._gs import on_graph

NONDETERMINISTIC = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                    "Bernoulli", "Dropout")


def _key(node: gs.Node) -> tuple | None:
    if node.op in NONDETERMINISTIC or any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return None
    attrs = tuple(sorted((k, _attr(v)) for k, v in node.attrs.items()))
    return node.op, node.domain, attrs, tuple(id(t) for t in node.inputs), len(node.outputs)


def _attr(value) -> object:
    array = value.values if isinstance(value, gs.Constant) else value
    if isinstance(array, np.ndarray):  # repr() elides long arrays
        return array.dtype.str, array.shape, array.tobytes()
    return repr(value)


def _merge(graph: gs.Graph) -> None:
    graph.toposort()
    outputs = {id(t) for t in graph.outputs}
    seen: dict[tuple, gs.Node] = {}
    for node in list(graph.nodes):
        key = _key(node)
        if key is None:
            continue
        kept = seen.setdefault(key, node)
        if kept is node or any(id(t) in outputs for t in node.outputs):
            continue
        for mine, theirs in zip(node.outputs, kept.outputs):
            for consumer in list(mine.outputs):
                for i, t in enumerate(consumer.inputs):
                    if t is mine:
                        consumer.inputs[i] = theirs
        node.outputs.clear()
    graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, _merge)
