"""Fuses MatMuls that read the same input with constant weights of the same depth (attention's Q, K and V
projections) into one MatMul over the concatenated weights, followed by a Split into the original outputs:
one larger GEMM instead of several, the input read once. Weights that live on disk are left alone (the fused
copy would be a second one in memory); so are groups whose outputs are graph outputs (their names stay)."""

from __future__ import annotations

from collections import defaultdict

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import fresh_name, on_graph
from compiler.passes.args import PassInfo
from compiler.weights import values_on_disk


PASS = PassInfo(
    name="fuse_parallel_matmuls",
    summary="fuse MatMuls that read one input with constant weights of one depth (Q/K/V projections) into one MatMul "
            "and a Split",
)


def _weight(node: gs.Node) -> np.ndarray | None:
    w = node.inputs[1] if len(node.inputs) == 2 else None
    if not isinstance(w, gs.Constant) or values_on_disk(w) or len(w.shape) != 2:
        return None
    return w.values


def _fuse(graph: gs.Graph) -> None:
    outputs = {id(t) for t in graph.outputs}
    groups: dict[tuple, list[tuple[gs.Node, np.ndarray]]] = defaultdict(list)
    for node in graph.nodes:
        if node.op != "MatMul" or id(node.outputs[0]) in outputs:
            continue
        w = _weight(node)
        if w is not None:
            groups[(id(node.inputs[0]), w.shape[0], w.dtype.str)].append((node, w))
    split_as_input = graph.opset >= 13
    for members in groups.values():
        if len(members) < 2:
            continue
        first = members[0][0]
        widths = [w.shape[1] for _, w in members]
        fused_w = gs.Constant(fresh_name(graph, f"{first.name or 'MatMul'}_qkv_w"),
                              np.ascontiguousarray(np.concatenate([w for _, w in members], axis=1)))
        fused_out = gs.Variable(fresh_name(graph, f"{first.name or 'MatMul'}_qkv"), dtype=first.outputs[0].dtype)
        graph.nodes.append(gs.Node("MatMul", fresh_name(graph, f"{first.name or 'MatMul'}_fused"),
                                   inputs=[first.inputs[0], fused_w], outputs=[fused_out]))
        parts = [node.outputs[0] for node, _ in members]
        for node, _ in members:
            node.outputs.clear()
            node.inputs.clear()
        sizes = np.array(widths, dtype=np.int64)
        split_inputs = [fused_out, gs.Constant(fresh_name(graph, f"{first.name or 'MatMul'}_qkv_split"), sizes)] \
            if split_as_input else [fused_out]
        attrs = {"axis": -1} if split_as_input else {"axis": -1, "split": [int(s) for s in sizes]}
        graph.nodes.append(gs.Node("Split", fresh_name(graph, f"{first.name or 'MatMul'}_split"), attrs=attrs,
                                   inputs=split_inputs, outputs=parts))
    graph.cleanup().toposort()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, _fuse)
