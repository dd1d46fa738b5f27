"""Folds shape-computation subgraphs (Shape -> Gather/Slice -> Unsqueeze -> Concat -> Cast -> ...).

Each tensor computed only from tensor shapes and constants is evaluated with symbols standing for
dynamic dims (onnxruntime's symbolic shape inference, _gs.inferred_graph, keeps one symbol per dim through the
graph) (a dim is never negative: an Equal against -1 is known False, and a Where on it is chosen). A fully known value becomes a constant (e.g. `sqrt(head_dim)` in attention); a Reshape
target that still holds the dynamic batch gets 0 ("copy this dim") or -1 in its place.
"""

from __future__ import annotations

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import constant, fresh_name, on_graph, small_constant
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="fold_shape_computations",
    summary="evaluate Shape->Gather/Slice->Concat->... subgraphs with symbolic dims: constants where fully known, "
            "0/-1 in Reshape targets",
)


_ELEMENTWISE = {"Add": "add", "Sub": "subtract", "Mul": "multiply", "Div": None, "Sqrt": "sqrt",
                "Reciprocal": "reciprocal", "Neg": "negative", "Max": "maximum", "Min": "minimum"}  # numpy's names
_MAX_ELEMENTS = 64


def _static(value: np.ndarray) -> bool:
    return not any(isinstance(v, str) for v in value.reshape(-1))


def _ints(node: gs.Node, index: int, attr: str):
    """An integer-list argument given as input `index` (newer opsets) or attribute `attr`."""
    if len(node.inputs) > index and node.inputs[index].name:
        c = constant(node.inputs[index])
        return None if c is None else [int(v) for v in np.asarray(c).reshape(-1)]
    value = node.attrs.get(attr)
    return None if value is None else [int(v) for v in value]


def _evaluate(node: gs.Node, vals: list) -> np.ndarray | None:
    op = node.op
    if op == "Shape":
        shape = node.inputs[0].shape
        if shape is None or any(d is None or (isinstance(d, int) and d < 0) for d in shape):
            return None  # a negative dim value in a file means "unknown", never a size
        dims = [int(d) if not isinstance(d, str) else d for d in shape]
        start, end = node.attrs.get("start", 0), node.attrs.get("end", len(dims))
        return np.array(dims[start:end], dtype=object)
    if any(v is None for v in vals[:1]):
        return None
    x = vals[0]
    if op in ("Identity", "Cast"):
        if op == "Cast" and _static(x):
            return np.asarray(x.astype(float) if x.size else x).astype(object)  # numeric cast at the end
        return x
    if op == "Gather" and x.ndim == 1:
        idx = constant(node.inputs[1])
        return None if idx is None else np.take(x, np.asarray(idx, dtype=np.int64), axis=0)
    if op == "Slice" and x.ndim == 1:
        starts, ends = _ints(node, 1, "starts"), _ints(node, 2, "ends")
        axes, steps = _ints(node, 3, "axes"), _ints(node, 4, "steps")
        if starts is None or ends is None or (axes and axes != [0]) or len(starts) != 1:
            return None
        return x[slice(starts[0], ends[0], (steps or [1])[0])]
    if op == "Concat":
        return None if any(v is None for v in vals) else np.concatenate([v.reshape(-1) for v in vals])
    if op in ("Unsqueeze", "Squeeze"):
        axes = _ints(node, 1, "axes")
        if x.ndim == 0 and op == "Unsqueeze" and axes in ([0], [-1]):
            return x.reshape(1)
        if x.ndim == 1 and x.size == 1 and op == "Squeeze" and axes in (None, [0], [-1]):
            return x.reshape(())
        return None
    if op in ("Add", "Sub", "Mul", "Div") and len(vals) == 2 and all(v is not None for v in vals) \
            and not all(_static(v) for v in vals):
        # symbolic arithmetic: an expression string, distinct from every dim (at most a -1 in a Reshape)
        a, b = np.broadcast_arrays(vals[0], vals[1])
        sign = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}[op]
        return np.array([f"({x}{sign}{y})" for x, y in zip(a.reshape(-1), b.reshape(-1))], dtype=object).reshape(a.shape)
    if op == "Reshape" and len(node.inputs) > 1:
        target = constant(node.inputs[1])
        if target is None or np.any(np.asarray(target) == 0) or np.sum(np.asarray(target) == -1) > 1:
            return None
        return x.reshape([int(d) for d in np.asarray(target).reshape(-1)])
    if op == "ConstantOfShape" and x.ndim == 1 and _static(x) and int(np.prod(x.astype(np.int64))) <= _MAX_ELEMENTS:
        fill = node.attrs.get("value")
        fill = np.asarray(getattr(fill, "values", fill if fill is not None else 0.0)).reshape(-1)[0]
        return np.full(tuple(int(d) for d in x), fill, dtype=object)
    if op == "Equal" and len(vals) == 2 and all(v is not None for v in vals):
        a, b = np.broadcast_arrays(vals[0], vals[1])
        equal = [_equal(x, y) for x, y in zip(a.reshape(-1), b.reshape(-1))]
        return None if None in equal else np.array(equal, dtype=object).reshape(a.shape)
    if op == "Where" and len(vals) == 3 and all(v is not None for v in vals) and _static(vals[0]):
        return np.where(np.asarray(vals[0], dtype=bool), *np.broadcast_arrays(vals[1], vals[2]))
    if op in _ELEMENTWISE and all(v is not None and _static(v) for v in vals):
        numeric = [np.asarray(v, dtype=np.float64) for v in vals]
        if op == "Div":
            ints = all(t.dtype is not None and np.issubdtype(np.dtype(t.dtype), np.integer) for t in node.inputs)
            result = numeric[0] // numeric[1] if ints else numeric[0] / numeric[1]
        else:
            result = getattr(np, _ELEMENTWISE[op])(*numeric)
        return np.asarray(result, dtype=object)
    return None


def _equal(x, y) -> bool | None:
    """Two entries of a shape computation: equal, not equal, or not known (None). A dim, or a sum or product of
    dims, is never negative, so it never equals a negative constant (torch's `expand(-1)` test)."""
    if not isinstance(x, str) and not isinstance(y, str):
        return bool(x == y)
    if isinstance(x, str) and isinstance(y, str):
        return True if x == y else None
    symbol, number = (x, y) if isinstance(x, str) else (y, x)
    return False if number < 0 and "-" not in symbol else None


def _fold(graph: gs.Graph) -> None:
    graph.toposort()
    values: dict[int, np.ndarray] = {}

    def value(t) -> np.ndarray | None:
        c = small_constant(t, _MAX_ELEMENTS)
        if c is not None and np.asarray(c).size <= _MAX_ELEMENTS and np.issubdtype(np.asarray(c).dtype, np.number):
            return np.asarray(c).astype(object)
        return values.get(id(t))

    for node in list(graph.nodes):
        if node.op == "Constant" or len(node.outputs) != 1 or not node.inputs:
            continue
        result = _evaluate(node, [value(t) for t in node.inputs])
        if result is None:
            continue
        result = np.asarray(result, dtype=object)  # np.take of one index gives a bare element
        if result.size > _MAX_ELEMENTS:
            continue
        out = node.outputs[0]
        values[id(out)] = result
        if _static(result) and (node.op == "Shape" or out.dtype is not None):
            dtype = np.int64 if node.op == "Shape" or out.dtype is None else np.dtype(out.dtype)
            folded = gs.Constant(fresh_name(graph, f"{out.name}_folded"), np.asarray(result.astype(np.float64), dtype=dtype))
            for consumer in list(out.outputs):
                consumer.inputs[consumer.inputs.index(out)] = folded
            values[id(folded)] = result
    for node in [n for n in graph.nodes if n.op == "Reshape"]:
        target = values.get(id(node.inputs[1]))
        if target is None or constant(node.inputs[1]) is not None:
            continue
        # allowzero=1 (torch's dynamo exporter writes it) reads a 0 as a size; a target with no literal 0 means
        # the same under allowzero=0, where our 0 copies the input's dim
        if node.attrs.get("allowzero", 0) and any(not isinstance(d, str) and d == 0 for d in target.reshape(-1)):
            continue
        shape = _reshape_target(target, node.inputs[0].shape)
        if shape is not None:
            node.inputs[1] = gs.Constant(fresh_name(graph, f"{node.outputs[0].name}_shape"), shape)
            node.attrs.pop("allowzero", None)
    graph.cleanup()


def _reshape_target(target: np.ndarray, in_shape) -> np.ndarray | None:
    """Symbols become 0 where the input has the same symbol at that index; at most one other becomes -1."""
    dims = []
    for i, d in enumerate(target.reshape(-1).tolist()):
        if not isinstance(d, str):
            dims.append(int(d))
        elif in_shape is not None and i < len(in_shape) and in_shape[i] == d:
            dims.append(0)
        else:
            dims.append(-1)
    if dims.count(-1) > 1 or (0 in dims and any(isinstance(d, int) and d == 0 for d in target.reshape(-1).tolist())):
        return None
    return np.array(dims, dtype=np.int64)


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx's shape inference first; onnxruntime's symbolic one (a sympy import, 0.4 s) only where a Shape is left
    unfolded, since only then can dims it proves equal fold more (a KV decoder's, not a CNN's)."""
    folded = on_graph(model, _fold, infer=True)
    if not any(node.op_type == "Shape" for node in folded.graph.node):
        return folded
    return on_graph(model, _fold, infer=True, symbolic=True)
