"""Common-subexpression elimination: nodes with the same op, attributes and inputs compute the same values.

The second of two such nodes is dropped and its consumers read the first one's outputs; constant
inputs count as the same when their values are (weights: when they are one tensor, see VALUE_KEY_BYTES). Nondeterministic ops (random generators) and nodes with
subgraphs are kept. First, a dim read off an intermediate tensor (`Gather(Shape(x), i)`) whose inferred
size is a named dim of a graph input is read off that input instead: exporters recompute `batch` and
`seq` from many tensors, and after this they are one computation.
"""

from __future__ import annotations

import hashlib

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import on_graph
from compiler.passes.args import PassInfo
from compiler.weights import nbytes, raw_bytes


PASS = PassInfo(
    name="merge_duplicate_nodes",
    summary="merge nodes with the same op, attributes and inputs (common subexpressions)",
)


# constant inputs up to this size count as the same by value; larger ones (weights) by identity, which
# dedup_constants (before this pass in the default list) has made the same for equal values, without reading them
VALUE_KEY_BYTES = 1 << 12
NONDETERMINISTIC = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                    "Bernoulli", "Dropout")


def _key(node: gs.Node) -> tuple | None:
    if node.op in NONDETERMINISTIC or any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return None
    attrs = tuple(sorted((k, _attr(v)) for k, v in node.attrs.items()))
    inputs = tuple(_attr(t) if isinstance(t, gs.Constant) and nbytes(t) <= VALUE_KEY_BYTES else id(t)
                   for t in node.inputs)
    return node.op, node.domain, attrs, inputs, len(node.outputs)


def _read_dims_off_inputs(graph: gs.Graph) -> None:
    """Gather(Shape(x), i) where x's dim i is a named dim of a graph input -> Gather(Shape(input), axis)."""
    sources: dict[str, tuple] = {}
    for tensor in graph.inputs:
        for axis, dim in enumerate(tensor.shape or []):
            if isinstance(dim, str) and dim:
                sources.setdefault(dim, (tensor, axis))
    shapes: dict[int, gs.Variable] = {}
    for node in list(graph.nodes):
        if node.op != "Gather" or node.attrs.get("axis", 0) != 0 or not node.inputs[0].inputs:
            continue
        shape_node, index = node.inputs[0].inputs[0], node.inputs[1]
        if shape_node.op != "Shape" or shape_node.attrs or not isinstance(index, gs.Constant) or index.values.ndim:
            continue
        dims = shape_node.inputs[0].shape
        i = int(index.values)
        dim = dims[i] if dims is not None and -len(dims) <= i < len(dims) else None
        if not isinstance(dim, str) or dim not in sources or sources[dim][0] is shape_node.inputs[0]:
            continue
        source, axis = sources[dim]
        if id(source) not in shapes:
            shapes[id(source)] = graph.layer(op="Shape", inputs=[source], outputs=[f"{source.name}_shape_for_dims"],
                                             )[0]
            shapes[id(source)].dtype, shapes[id(source)].shape = np.int64, [len(source.shape)]
        node.inputs[0] = shapes[id(source)]
        node.inputs[1] = gs.Constant(f"{node.name}_axis", np.array(axis, dtype=np.int64))


def _attr(value) -> object:
    array = value.values if isinstance(value, gs.Constant) else value
    if isinstance(array, np.ndarray):  # repr() elides long arrays; a digest keeps big weights out of the keys
        return array.dtype.str, array.shape, hashlib.sha256(raw_bytes(array)).hexdigest()
    return repr(value)


def _merge(graph: gs.Graph) -> None:
    _read_dims_off_inputs(graph)
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
    return on_graph(model, _merge, infer=True)
