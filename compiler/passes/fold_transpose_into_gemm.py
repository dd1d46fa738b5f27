"""Folds Transpose -> Reshape(flatten) -> Gemm/MatMul into the weights: the rows of the constant
weight are permuted instead, so the activation is never transposed (Keras' channels-last flatten
on a channels-first graph)."""

from __future__ import annotations

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import constant, fresh_name, on_graph, only_consumer
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="fold_transpose_into_gemm",
    summary="fold Transpose -> flatten Reshape -> Gemm/MatMul into permuted weights",
)


def _fold(graph: gs.Graph) -> None:
    for transpose in [n for n in graph.nodes if n.op == "Transpose"]:
        perm = transpose.attrs.get("perm")
        source, moved = transpose.inputs[0], transpose.outputs[0]
        reshape = only_consumer(moved)
        if perm is None or perm[0] != 0 or reshape is None or reshape.op != "Reshape" or moved in graph.outputs:
            continue
        dims = list(source.shape or [])[1:]
        target = constant(reshape.inputs[1])
        flat = reshape.outputs[0]
        gemm = only_consumer(flat)
        if not dims or not all(isinstance(d, int) for d in dims) or target is None or len(target) != 2 \
                or gemm is None or gemm.op not in ("Gemm", "MatMul") or gemm.inputs[0] is not flat:
            continue
        k = int(np.prod(dims))
        if target[1] not in (k, -1) or target[0] not in (0, -1) and target[1] == -1:
            continue
        weight = constant(gemm.inputs[1])
        trans_b = gemm.op == "Gemm" and gemm.attrs.get("transB", 0)
        if weight is None or weight.ndim != 2 or gemm.attrs.get("transA", 0) or \
                (weight.shape[1] if trans_b else weight.shape[0]) != k:
            continue
        order = np.arange(k).reshape(dims).transpose([p - 1 for p in perm[1:]]).reshape(-1)
        inverse = np.argsort(order)
        permuted = weight[:, inverse] if trans_b else weight[inverse]
        gemm.inputs[1] = gs.Constant(fresh_name(graph, f"{gemm.name or gemm.op}_w_untransposed"), np.ascontiguousarray(permuted))
        reshape.inputs[0] = source
        transpose.inputs.clear()
        transpose.outputs.clear()
    graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, _fold, infer=True)
