"""Folds shape-computation subgraphs that feed a Reshape (Shape -> Gather -> ... -> Concat) into a
constant shape, using 0 for dimensions copied from the input (the dynamic batch) where the
inferred output shape allows it."""

from __future__ import annotations

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import constant, fresh_name, on_graph
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="simplify_reshape",
    summary="replace shape-computation subgraphs feeding Reshape with a constant shape",
)


def _static_shape(node: gs.Node) -> np.ndarray | None:
    data, out = node.inputs[0], node.outputs[0]
    if data.shape is None or out.shape is None:
        return None
    if node.attrs.get("allowzero", 0):
        return None  # there 0 means a zero-sized dim, not "copy"
    dims = []
    for i, d in enumerate(out.shape):
        if isinstance(d, (int, np.integer)) and d > 0:
            dims.append(int(d))
        elif isinstance(d, str) and i < len(data.shape) and data.shape[i] == d:
            dims.append(0)  # copy this symbolic dim from the input
        elif i == 0 and _same_leading_dim(data.shape, out.shape):
            dims.append(0)
        else:
            return None
    return np.array(dims, dtype=np.int64)


def _same_leading_dim(in_shape, out_shape) -> bool:
    """Dim 0 carries over when every other dim is static and both sides hold as many elements per row."""
    rest_in, rest_out = list(in_shape[1:]), list(out_shape[1:])
    static = all(isinstance(d, (int, np.integer)) and d > 0 for d in rest_in + rest_out)
    return static and isinstance(in_shape[0], str) and int(np.prod(rest_in)) == int(np.prod(rest_out))


def _simplify(graph: gs.Graph) -> None:
    for node in [n for n in graph.nodes if n.op == "Reshape"]:
        if constant(node.inputs[1]) is not None:
            continue
        shape = _static_shape(node)
        if shape is not None:
            node.inputs[1] = gs.Constant(fresh_name(graph, f"{node.name or node.op}_shape"), shape)
    graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, _simplify, infer=True)
