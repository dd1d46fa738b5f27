"""Merges a Transpose fed by a Transpose into one reading the first's input (none when the perms
cancel), and a Reshape fed by a Reshape, Squeeze, Unsqueeze or Flatten into one Reshape of that op's input.
The first node stays only if others read it.
A Concat that reads another Concat on the same axis takes that one's inputs in its place, and an
Unsqueeze of an Unsqueeze becomes one."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from compiler.passes._gs import bypass, constant, on_graph


_RESHAPE_LIKE = ("Reshape", "Squeeze", "Unsqueeze", "Flatten")


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


def _unsqueeze_axes(node: gs.Node) -> list[int] | None:
    axes = constant(node.inputs[1]) if len(node.inputs) > 1 else node.attrs.get("axes")
    return None if axes is None else [int(a) for a in np.asarray(axes).ravel()]


def _merge_unsqueezes(graph: gs.Graph) -> bool:
    """Unsqueeze(Unsqueeze(x, a), b) -> Unsqueeze(x, c): where the inserted 1s end up, computed on a model of the dims."""
    changed = False
    for second in graph.nodes:
        if second.op != "Unsqueeze" or len(second.inputs) < 2 or not second.inputs[0].inputs:
            continue
        first = second.inputs[0].inputs[0]
        a, b, x = (_unsqueeze_axes(first), _unsqueeze_axes(second), first.inputs[0]) if first.op == "Unsqueeze" \
            else (None, None, None)
        if a is None or b is None or x.shape is None or len(first.inputs) < 2:
            continue
        dims: list[object] = list(range(len(x.shape)))  # original dims by index; inserted ones as "new"
        for axes in (a, b):
            rank = len(dims) + len(axes)
            for axis in sorted(ax % rank for ax in axes):
                dims.insert(axis, "new")
        merged = [i for i, d in enumerate(dims) if d == "new"]
        second.inputs[0] = x
        second.inputs[1] = gs.Constant(f"{second.name}_axes_merged", np.array(merged, dtype=np.int64))
        changed = True
    return changed


def _merge(graph: gs.Graph) -> None:
    changed = True
    while changed:
        changed = _flatten_concats(graph) | _merge_unsqueezes(graph)
        for second in list(graph.nodes):
            if second.op not in ("Transpose", "Reshape") or not second.inputs or not second.inputs[0].inputs:
                continue
            first = second.inputs[0].inputs[0]
            # a Reshape only sees its input's elements in order, so any reshape-like op before it can be skipped
            if first.op != second.op and not (second.op == "Reshape" and first.op in _RESHAPE_LIKE):
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
