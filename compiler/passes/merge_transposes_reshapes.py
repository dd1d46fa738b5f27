"""Merges a Transpose fed by a Transpose into one reading the first's input (none when the perms
cancel), and likewise a Reshape fed by a Reshape. The first node stays only if others read it.
A Concat that reads another Concat on the same axis takes that one's inputs in its place."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from compiler.passes._gs import bypass, constant, on_graph


def _flatten_concats(graph: gs.Graph) -> bool:
    changed = False
    for outer in graph.nodes:
        if outer.op != "Concat":
            continue
        inputs = []
        for tensor in outer.inputs:
            inner = tensor.inputs[0] if tensor.inputs else None
            if inner is not None and inner.op == "Concat" and inner.attrs.get("axis") == outer.attrs.get("axis") \
                    and tensor not in graph.outputs:
                inputs += list(inner.inputs)
                changed = True
            else:
                inputs.append(tensor)
        if len(inputs) != len(outer.inputs):
            outer.inputs.clear()
            outer.inputs.extend(inputs)
    return changed


def _merge(graph: gs.Graph) -> None:
    changed = True
    while changed:
        changed = _flatten_concats(graph)
        for second in list(graph.nodes):
            if second.op not in ("Transpose", "Reshape") or not second.inputs or not second.inputs[0].inputs:
                continue
            first = second.inputs[0].inputs[0]
            if first.op != second.op:
                continue
            if second.op == "Transpose":
                p1, p2 = first.attrs.get("perm"), second.attrs.get("perm")
                if p1 is None or p2 is None:
                    continue
                second.attrs["perm"] = [int(p1[i]) for i in p2]
            else:
                shape = constant(second.inputs[1])
                if shape is None or np.any(shape == 0):  # a 0 copies a dim of the first's output
                    continue
            second.inputs[0] = first.inputs[0]
            if second.op == "Transpose" and list(second.attrs["perm"]) == sorted(second.attrs["perm"]):
                bypass(graph, second, second.inputs[0])
            changed = True
        graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, _merge)
