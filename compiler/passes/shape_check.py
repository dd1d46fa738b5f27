"""The constants that carry shapes hold values every input shape of the profile accepts: Reshape's target, Expand's
shape, Tile's repeats, ConstantOfShape's shape, Slice's axes and steps.

A pass that folds a dynamic dim into a number writes a wrong one: the Shape of an input declared with dim -1 folds
to a target of -75 that no runtime loads (Polygraphy's `reshape.onnx`), and a batch baked in at one size fails
or, worse, reshapes wrongly at another. The surgery stage checks after every pass that changed such a constant
(`fingerprint`), at the min and max input shapes, and drops a result with a problem the model before it did not
have (`problems`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from compiler.heavy import np, onnx
from compiler.passes._gs import static_shapes
from compiler.weights import is_external

# op -> the inputs that carry a shape or shape-like integers
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {"Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,),
                                            "Slice": (3, 4)}
_MAX_ELEMENTS = 64   # a shape constant is small; anything larger is not one


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The small integer constants of the graph by name: initializers and Constant nodes' values."""
    found = {}
    for tensor in model.graph.initializer:
        if tensor.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and not is_external(tensor) \
                and int(np.prod(tensor.dims, dtype=np.int64)) <= _MAX_ELEMENTS:
            found[tensor.name] = onnx.numpy_helper.to_array(tensor)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            value = onnx.numpy_helper.to_array(node.attribute[0].t)
            if value.dtype.kind == "i" and value.size <= _MAX_ELEMENTS:
                found[node.output[0]] = value
    return found


def _shape_nodes(model: onnx.ModelProto, constants: dict[str, np.ndarray]):
    """(node, {input index: its constant value}) for every shape-carrying node with a constant shape input."""
    for node in model.graph.node:
        indices = SHAPE_INPUTS.get(node.op_type)
        if node.domain not in ("", "ai.onnx") or indices is None:
            continue
        held = {i: constants[node.input[i]] for i in indices if i < len(node.input) and node.input[i] in constants}
        if held:
            yield node, held


def fingerprint(model: onnx.ModelProto) -> tuple:
    """What the shape-carrying constants hold, node by node: equal before and after a pass that left them alone."""
    constants = _constants(model)
    return tuple(sorted((node.op_type, node.name, tuple((i, v.tolist().__repr__()) for i, v in held.items()))
                        for node, held in _shape_nodes(model, constants)))


def problems(model: onnx.ModelProto, input_shapes: Sequence[Mapping[str, Sequence[int]]] = ()) -> set[str]:
    """Every shape constant that is invalid on its own, or at one of `input_shapes` (concrete shapes of the
    graph's inputs, e.g. the profile's min and max)."""
    constants = _constants(model)
    nodes = list(_shape_nodes(model, constants))
    if not nodes:
        return set()
    on_their_own = {id(node): set(_node_problems(node, held, None, "")) for node, held in nodes}
    found = set().union(*on_their_own.values())
    for shapes in input_shapes:
        known = static_shapes(model, shapes)
        if known is None:
            continue
        label = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
        for node, held in nodes:
            if not on_their_own[id(node)] and node.input[0] in known:
                found.update(_node_problems(node, held, known[node.input[0]][0], f" at {label}"))
    return found


def _node_problems(node: onnx.NodeProto, held: dict[int, np.ndarray], data: list[int] | None, where: str):
    op, name = node.op_type, node.name or node.output[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    for index, value in held.items():
        values = [int(v) for v in value.reshape(-1)]
        said = f"{op} '{name}' {_ROLE[op, index]} {values}{where}"
        reason = _reason(op, index, values, data, attrs)
        if reason:
            yield f"{said}: {reason}"


_ROLE = {("Reshape", 1): "target", ("Expand", 1): "shape", ("Tile", 1): "repeats", ("ConstantOfShape", 0): "shape",
         ("Slice", 3): "axes", ("Slice", 4): "steps"}


def _reason(op: str, index: int, values: list[int], data: list[int] | None, attrs: dict[str, Any]) -> str | None:
    if op == "Reshape":
        return _reshape(values, data, bool(attrs.get("allowzero", 0)))
    if op == "Expand":
        if any(v < 0 for v in values):
            return "a negative size"
        if data is not None:
            pairs = zip(reversed(data), reversed(values))
            if any(a != b and a != 1 and b != 1 for a, b in pairs):
                return f"does not broadcast with the input's shape {data}"
        return None
    if op == "Tile":
        if any(v < 0 for v in values):
            return "a negative repeat"
        return None if data is None or len(values) == len(data) else f"{len(values)} repeats for rank {len(data)}"
    if op == "ConstantOfShape":
        return "a negative size" if any(v < 0 for v in values) else None
    if index == 4:  # Slice steps
        return "a step of 0" if 0 in values else None
    if data is not None and any(not -len(data) <= v < len(data) for v in values):  # Slice axes
        return f"an axis outside rank {len(data)}"
    return None


def _reshape(values: list[int], data: list[int] | None, allowzero: bool) -> str | None:
    if any(v < -1 for v in values):
        return "a size below -1"
    if values.count(-1) > 1:
        return "more than one -1"
    if allowzero and 0 in values and -1 in values:
        return "0 and -1 together with allowzero"
    if data is None:
        return None
    if not allowzero and any(v == 0 and i >= len(data) for i, v in enumerate(values)):
        return f"a 0 (copy a dim) past the input's rank {len(data)}"
    out = [data[i] if v == 0 and not allowzero else v for i, v in enumerate(values)]
    total = int(np.prod(data, dtype=np.int64))
    known = int(np.prod([v for v in out if v != -1], dtype=np.int64))
    if -1 in out:
        fits = total % known == 0 if known else total == 0
    else:
        fits = known == total
    return None if fits else f"does not hold the input's {total} elements (shape {data})"
