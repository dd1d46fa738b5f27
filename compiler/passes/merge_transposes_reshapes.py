"""Merges a Transpose fed by a Transpose into one reading the first's input (none when the perms
cancel), and likewise a Reshape fed by a Reshape. The first node stays only if others read it."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from compiler.passes._gs import bypass, constant, on_graph


def _merge(graph: gs.Graph) -> None:
    changed = True
    while changed:
        changed = False
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
