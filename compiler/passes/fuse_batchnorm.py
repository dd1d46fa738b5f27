"""Folds an inference BatchNormalization into the Conv, ConvTranspose, Gemm or MatMul before it."""

from __future__ import annotations

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import bypass, constant, fresh_name, on_graph, only_consumer
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="fuse_batchnorm",
    summary="fold inference BatchNormalization into the Conv/ConvTranspose/Gemm/MatMul before it",
)


def _bn_affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray] | None:
    values = [constant(t) for t in bn.inputs[1:5]]
    if any(v is None for v in values) or len(bn.outputs) != 1:
        return None
    gamma, beta, mean, var = (v.astype(np.float64) for v in values)
    scale = gamma / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
    return scale, beta - mean * scale


def _fuse(graph: gs.Graph) -> None:
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        producer = bn.inputs[0].inputs[0] if bn.inputs[0].inputs else None
        if producer is None or only_consumer(bn.inputs[0]) is not bn or bn.inputs[0] in graph.outputs:
            continue
        affine = _bn_affine(bn)
        weight = constant(producer.inputs[1]) if len(producer.inputs) > 1 else None
        if affine is None or weight is None:
            continue
        scale, shift = affine
        bias_in = constant(producer.inputs[2]) if len(producer.inputs) > 2 else np.zeros(len(scale))
        if bias_in is None:
            continue
        w = weight.astype(np.float64)
        if producer.op == "Conv" and w.ndim >= 3:
            w = w * scale.reshape(-1, *[1] * (w.ndim - 1))
        elif producer.op == "ConvTranspose" and producer.attrs.get("group", 1) == 1:
            w = w * scale.reshape(1, -1, *[1] * (w.ndim - 2))
        elif producer.op == "Gemm" and producer.attrs.get("alpha", 1.0) == 1.0 and producer.attrs.get("beta", 1.0) == 1.0:
            w = w * (scale[:, None] if producer.attrs.get("transB", 0) else scale[None, :])
        elif producer.op == "MatMul" and w.ndim == 2 and len(bn.inputs[0].shape or []) == 2:
            w = w * scale[None, :]
        else:
            continue
        dtype = weight.dtype
        producer.inputs[1] = gs.Constant(fresh_name(graph, f"{producer.name or producer.op}_w_bnfused"), w.astype(dtype))
        bias = gs.Constant(fresh_name(graph, f"{producer.name or producer.op}_b_bnfused"), (bias_in * scale + shift).astype(dtype))
        if producer.op == "MatMul":  # MatMul has no bias: it becomes a Gemm
            producer.op, producer.attrs = "Gemm", {}
        if len(producer.inputs) > 2:
            producer.inputs[2] = bias
        else:
            producer.inputs.append(bias)
        bypass(graph, bn, bn.inputs[0])
    graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, _fuse, infer=True)
