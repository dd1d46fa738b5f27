"""Folds a constant Mul or Add after a Conv or Gemm into its weights and bias, and turns
MatMul + constant Add (2-D) into one Gemm."""

from __future__ import annotations

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import bypass, constant, fresh_name, on_graph, only_consumer
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="fold_mul_add",
    summary="fold constant Mul/Add after Conv/Gemm into weights and bias; MatMul + Add into Gemm",
)


def _per_channel(c: np.ndarray, channels: int, rank: int, conv: bool) -> np.ndarray | None:
    """The constant as a vector over output channels, if it broadcasts only along them."""
    if c.size == 1:
        return np.full(channels, float(c.reshape(-1)[0]))
    target_rank = rank if conv else 2
    if c.ndim > target_rank:
        return None
    padded = [1] * (target_rank - c.ndim) + list(c.shape)
    return c.reshape(-1).astype(np.float64) if padded == [1, channels] + [1] * (target_rank - 2) else None


def _fold(graph: gs.Graph) -> None:
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op not in ("Conv", "Gemm", "MatMul") or not node.outputs:
                continue
            out = node.outputs[0]
            follower = only_consumer(out)
            if follower is None or follower.op not in ("Mul", "Add") or out in graph.outputs:
                continue
            other = follower.inputs[1] if follower.inputs[0] is out else follower.inputs[0]
            c = constant(other)
            weight = constant(node.inputs[1]) if len(node.inputs) > 1 else None
            if c is None or weight is None:
                continue
            if node.op == "Gemm" and (node.attrs.get("alpha", 1.0) != 1.0 or node.attrs.get("beta", 1.0) != 1.0):
                continue
            if node.op == "MatMul" and (follower.op != "Add" or weight.ndim != 2 or len(out.shape or []) != 2):
                continue
            conv = node.op == "Conv"
            channels = weight.shape[0] if conv or node.attrs.get("transB", 0) else weight.shape[1]
            vec = _per_channel(c, channels, len(out.shape or [0, 0, 0, 0]), conv)
            if vec is None:
                continue
            old_bias = constant(node.inputs[2]) if len(node.inputs) > 2 else np.zeros(channels)
            if old_bias is None or old_bias.size != channels:
                continue
            bias = old_bias.astype(np.float64).reshape(-1)
            w = weight.astype(np.float64)
            if follower.op == "Mul":
                if conv:
                    w = w * vec.reshape(-1, *[1] * (w.ndim - 1))
                else:
                    w = w * (vec[:, None] if node.attrs.get("transB", 0) else vec[None, :])
                bias = bias * vec
            else:
                bias = bias + vec
            node.inputs[1] = gs.Constant(fresh_name(graph, f"{node.name or node.op}_w_folded"), w.astype(weight.dtype))
            new_bias = gs.Constant(fresh_name(graph, f"{node.name or node.op}_b_folded"), bias.astype(weight.dtype))
            if node.op == "MatMul":
                node.op, node.attrs = "Gemm", {}
            if len(node.inputs) > 2:
                node.inputs[2] = new_bias
            else:
                node.inputs.append(new_bias)
            bypass(graph, follower, out)
            changed = True
        graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, _fold, infer=True)
