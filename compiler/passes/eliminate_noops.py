"""Removes nodes that compute nothing: Identity, inference Dropout, Cast to the same type,
Reshape/Flatten to the same shape, identity Transpose, zero Pad, Mul/Div by 1, Add/Sub of 0, And with true, Or with false,
Expand to the same shape, single-input Concat; and all-zero initial states of LSTM/GRU/RNN."""

from __future__ import annotations

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import bypass, constant, known_shape, on_graph
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="eliminate_noops",
    summary="remove Identity, inference Dropout, same-type Cast, same-shape "
            "Reshape/Flatten/Expand/Squeeze/Unsqueeze, identity Transpose, zero Pad, Mul/Div by 1, Add/Sub of 0, "
            "one-input Concat",
)


def _same_shape(a, b) -> bool:
    sa, sb = known_shape(a), known_shape(b)
    return sa is not None and sb is not None and sa == sb and all(d is not None for d in sa)


def _reshape_keeps_shape(node: gs.Node) -> bool:
    """A constant target shape that matches the input dim for dim (0 = copy, one -1 for a dynamic dim)."""
    target, shape = constant(node.inputs[1]), known_shape(node.inputs[0])
    if target is None or shape is None or len(target) != len(shape) or node.attrs.get("allowzero", 0):
        return False
    wildcard = 0
    for t, d in zip(target.tolist(), shape):
        if t == -1:
            wildcard += 1
        elif not (t == 0 or t == d):
            return False
    return wildcard <= 1


def _is_noop(node: gs.Node) -> bool:
    op, x, y = node.op, node.inputs[0] if node.inputs else None, node.outputs[0]
    if op == "Identity":
        return True
    if op == "Dropout":
        return len(node.outputs) == 1 or not node.outputs[1].outputs
    if op == "Cast":
        return x.dtype is not None and y.dtype is not None and np.dtype(x.dtype) == np.dtype(y.dtype)
    if op == "Reshape":
        return _same_shape(x, y) or _reshape_keeps_shape(node)
    if op in ("Flatten", "Expand", "Squeeze", "Unsqueeze"):
        return _same_shape(x, y)
    if op == "Transpose":
        perm = node.attrs.get("perm")
        return perm is not None and list(perm) == sorted(perm)
    if op == "Pad":
        pads = constant(node.inputs[1]) if len(node.inputs) > 1 else node.attrs.get("pads")
        return pads is not None and not np.any(pads) and node.attrs.get("mode", "constant") in ("constant", b"constant")
    if op in ("Mul", "Div", "Add", "Sub", "And", "Or"):
        return _neutral_operand(node) is not None
    if op == "Concat":
        return len(node.inputs) == 1
    return False


def _broadcast_keeps_shape(x, c: np.ndarray) -> bool:
    """Broadcasting the constant `c` against `x` leaves x's shape as it is (every dim of c is 1 or x's); a scalar
    never changes it, whatever x's shape (one inference could not give: an ai.onnx.ml tree's probabilities)."""
    if c.ndim == 0:
        return True
    shape = known_shape(x)
    if shape is None or c.ndim > len(shape):
        return False
    return all(cd == 1 or cd == xd for cd, xd in zip(reversed(c.shape), reversed(shape)))


def _neutral_operand(node: gs.Node) -> int | None:
    """The index of the variable operand when the other is an all-1 (Mul/Div) or all-0 (Add/Sub) constant that
    changes neither shape nor dtype (only the second operand for Div/Sub); None otherwise."""
    neutral = {"Mul": 1, "Div": 1, "And": True, "Add": 0, "Sub": 0, "Or": False}[node.op]
    sides = ((0, 1), (1, 0)) if node.op in ("Mul", "Add", "And", "Or") else ((0, 1),)
    for keep, other in sides:
        x, c = node.inputs[keep], constant(node.inputs[other])
        if c is not None and bool(np.all(c == neutral)) and \
                (_same_shape(x, node.outputs[0]) or _broadcast_keeps_shape(x, c)) and \
                (x.dtype is None or np.dtype(x.dtype) == np.dtype(c.dtype)):
            return keep
    return None


_VIEWS = ("Slice", "Gather", "Reshape", "Squeeze", "Unsqueeze", "Expand", "Identity", "Transpose", "Tile")


def _all_zeros(tensor, depth: int = 8) -> bool:
    """A constant zero tensor, a zero ConstantOfShape, or a view of one."""
    value = constant(tensor)
    if value is not None:
        return not np.any(value)
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is None or depth == 0:
        return False
    if producer.op == "ConstantOfShape":
        fill = producer.attrs.get("value")
        return fill is None or not np.any(fill.values)
    return producer.op in _VIEWS and _all_zeros(producer.inputs[0], depth - 1)


def _zero_initial_states(graph: gs.Graph) -> None:
    """LSTM/GRU/RNN initial states that are all zeros are the default: drop the input."""
    for node in graph.nodes:
        if node.op not in ("LSTM", "GRU", "RNN"):
            continue
        states = (5, 6) if node.op == "LSTM" else (5,)
        for index in states:
            if len(node.inputs) > index and node.inputs[index].name and _all_zeros(node.inputs[index]):
                node.inputs[index] = gs.Variable.empty()


def _eliminate(graph: gs.Graph) -> None:
    _zero_initial_states(graph)
    # decide on the shapes as inferred, before any rewiring renames a symbolic dim under a node
    noops = [node for node in graph.nodes if node.outputs and node.inputs and _is_noop(node)]
    for node in noops:
        keep = _neutral_operand(node) if node.op in ("Mul", "Add", "And", "Or") else 0
        bypass(graph, node, node.inputs[keep or 0])
    graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, _eliminate, infer=True)
