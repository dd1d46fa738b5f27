"""Merges a Transpose feeding only a Transpose into one (or none), and a Reshape feeding only a
Reshape into the second alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from compiler.passes._gs import bypass, constant, on_graph, only_consumer


def _merge(graph: gs.Graph) -> None:
    changed = True
    while changed:
        changed = False
        for first in list(graph.nodes):
            if first.op not in ("Transpose", "Reshape") or not first.outputs:
                continue
            second = only_consumer(first.outputs[0])
            if second is None or second.op != first.op or first.outputs[0] in graph.outputs:
                continue
            if first.op == "Transpose":
                p1, p2 = first.attrs.get("perm"), second.attrs.get("perm")
                if p1 is None or p2 is None:
                    continue
                second.attrs["perm"] = [int(p1[i]) for i in p2]
            else:
                shape = constant(second.inputs[1])
                if shape is None or np.any(shape == 0):  # a 0 copies a dim of the first's output
                    continue
            second.inputs[0] = first.inputs[0]
            first.outputs.clear()
            first.inputs.clear()
            if second.op == "Transpose" and list(second.attrs["perm"]) == sorted(second.attrs["perm"]):
                bypass(graph, second, second.inputs[0])
            changed = True
        graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, _merge)
