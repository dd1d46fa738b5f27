"""Deduplicates identical initializers and Constant values (same dtype, shape and bytes)."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from compiler.passes._gs import on_graph


def _dedup(graph: gs.Graph) -> None:
    seen: dict[tuple, gs.Constant] = {}
    outputs = {id(t) for t in graph.outputs}
    for node in graph.nodes:
        for i, tensor in enumerate(node.inputs):
            if not isinstance(tensor, gs.Constant) or id(tensor) in outputs:
                continue
            values = tensor.values
            key = (str(values.dtype), values.shape, hashlib.sha256(np.ascontiguousarray(values).data).hexdigest())
            kept = seen.setdefault(key, tensor)
            if kept is not tensor:
                node.inputs[i] = kept
    graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    # Constant nodes become initializers first (graphsurgeon's fold does that), so both are covered.
    return on_graph(model, lambda g: (g.fold_constants(fold_shapes=False, error_ok=True), _dedup(g)))
