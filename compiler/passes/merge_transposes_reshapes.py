"""Merges a Transpose fed by a Transpose into one reading the first's input (none when the perms
cancel), and a Reshape fed by a Reshape, Squeeze, Unsqueeze or Flatten into one Reshape of that op's input.
The first node stays only if others read it.
A Concat that reads another Concat on the same axis takes that one's inputs in its place, an
Unsqueeze of an Unsqueeze becomes one, an Unsqueeze of a Reshape (read by nothing else) becomes one Reshape,
and a Slice of a Slice on other axes becomes one Slice over both."""

from __future__ import annotations

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import bypass, constant, on_graph
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="merge_transposes_reshapes",
    summary="merge consecutive Transposes (dropping identities), a Reshape after any reshape-like op, Concats of "
            "Concats on one axis, and Slices of Slices on other axes",
)


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


def _unsqueeze_into_reshape(graph: gs.Graph) -> bool:
    """Unsqueeze(Reshape(x, t), axes) -> Reshape(x, t with 1s at the axes), where the Reshape has no other reader
    and its target no 0 (a 0 copies a dim at its own position): torch's dynamo export of a packed q/k/v view."""
    changed = False
    for second in graph.nodes:
        if second.op != "Unsqueeze" or not second.inputs[0].inputs:
            continue
        first, axes = second.inputs[0].inputs[0], _unsqueeze_axes(second)
        target = constant(first.inputs[1]) if first.op == "Reshape" and len(first.inputs) > 1 else None
        if target is None or axes is None or np.any(np.asarray(target) == 0) or len(first.outputs[0].outputs) != 1 \
                or first.outputs[0] in graph.outputs:
            continue
        dims = [int(d) for d in np.asarray(target).ravel()]
        rank = len(dims) + len(axes)
        for axis in sorted(a % rank for a in axes):
            dims.insert(axis, 1)
        second.op, second.attrs = "Reshape", {}
        shape = gs.Constant(f"{second.name}_shape_merged", np.array(dims, dtype=np.int64))
        second.inputs.clear()
        second.inputs.extend([first.inputs[0], shape])
        changed = True
    return changed


def _slice_params(node: gs.Node, rank: int | None) -> list[np.ndarray] | None:
    """(starts, ends, axes, steps) of an input-form Slice, all constant, axes made non-negative; else None."""
    if len(node.inputs) < 3:
        return None  # opset < 10: attributes; left alone
    given = [constant(t) if t.name else None for t in node.inputs[1:5]] + [None] * (5 - len(node.inputs))
    starts, ends, axes, steps = given
    if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3].name and axes is None) \
            or (len(node.inputs) > 4 and node.inputs[4].name and steps is None):
        return None
    axes = np.arange(len(starts)) if axes is None else np.asarray(axes).ravel()
    if np.any(axes < 0):
        if rank is None:
            return None
        axes = axes % rank
    steps = np.ones(len(starts), dtype=np.int64) if steps is None else np.asarray(steps).ravel()
    return [np.asarray(starts).ravel(), np.asarray(ends).ravel(), axes, steps]


def _merge_slices(graph: gs.Graph) -> bool:
    """Slice(Slice(x, a), b) -> Slice(x, a + b) where a and b slice different axes: each axis sliced once."""
    changed = False
    for second in graph.nodes:
        if second.op != "Slice" or not second.inputs or not second.inputs[0].inputs:
            continue
        first = second.inputs[0].inputs[0]
        if first.op != "Slice" or second.inputs[0] in graph.outputs:
            continue
        x = first.inputs[0]
        rank = len(x.shape) if x.shape is not None else None
        a, b = _slice_params(first, rank), _slice_params(second, rank)
        if a is None or b is None or set(a[2].tolist()) & set(b[2].tolist()):
            continue
        merged = [np.concatenate([u, v]).astype(np.int64) for u, v in zip(a, b)]
        names = ("starts", "ends", "axes", "steps")
        second.inputs.clear()
        second.inputs.extend([x] + [gs.Constant(f"{second.name}_{n}_merged", v) for n, v in zip(names, merged)])
        changed = True
    return changed


def _merge(graph: gs.Graph) -> None:
    changed = True
    while changed:
        changed = _flatten_concats(graph) | _merge_unsqueezes(graph) | _unsqueeze_into_reshape(graph) | \
            _merge_slices(graph)
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
