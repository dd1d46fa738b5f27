"""Moves attention's scale from q and k to the scores: Softmax(MatMul(q * a, kᵀ * b)) -> Softmax(MatMul(q, kᵀ) / c).

timm (`q * self.scale`) and torch's exporter of `scaled_dot_product_attention` (q and kᵀ each times √scale,
the √ folded to a constant by fold_constants) scale the operands; BERT-style code and onnxruntime's attention
fusion scale the scores (`MatMul -> Div -> [Add mask] -> Softmax`). The two are the same function up to
rounding (one multiply by a·b instead of two), and only the second is fused into one Attention kernel.
Scores scaled by a multiply (transformers' eager attention: `MatMul -> Mul(scaling) -> Softmax`, with no mask) are
divided by the reciprocal instead: onnxruntime matches a mask-less attention only as `MatMul -> Div -> Softmax`.
"""

from __future__ import annotations

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import fresh_name, on_graph, small_constant
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="scale_after_qk",
    summary="move attention's scale from q and k to the scores (MatMul -> Div -> Softmax), the form onnxruntime's "
            "attention fusion matches (GPU engines do this)",
)


def _scalar_factor(tensor) -> tuple[object, float] | None:
    """(the other operand, the scalar) when `tensor` is Mul(x, scalar constant)."""
    if len(tensor.inputs) != 1 or tensor.inputs[0].op != "Mul":
        return None
    mul = tensor.inputs[0]
    for i in (0, 1):
        value = small_constant(mul.inputs[i], 1)
        if value is not None and value.size == 1 and np.issubdtype(value.dtype, np.floating):
            other = mul.inputs[1 - i]
            return other, float(value.reshape(()))
    return None


def _scaled_scores_as_division(graph: gs.Graph, softmax: gs.Node) -> int:
    """Softmax(MatMul(q, kᵀ) * c) -> Softmax(MatMul(q, kᵀ) / (1/c)); 1 where rewritten."""
    factor = _scalar_factor(softmax.inputs[0])
    if factor is None or factor[1] == 0.0:
        return 0
    scores, scale = factor
    if len(scores.inputs) != 1 or scores.inputs[0].op != "MatMul" or len(scores.outputs) != 1:
        return 0
    mul = softmax.inputs[0].inputs[0]
    dtype = scores.dtype if scores.dtype is not None else np.float32
    divisor = gs.Constant(fresh_name(graph, f"{mul.name or 'qk'}_reciprocal"), np.array(1.0 / scale, dtype=dtype))
    mul.op, mul.inputs = "Div", [scores, divisor]
    return 1


def move(graph: gs.Graph) -> int:
    """Rewrite every Softmax whose scores come from MatMul of scaled operands, or are scaled by a multiply;
    return how many."""
    moved = 0
    for softmax in [n for n in graph.nodes if n.op == "Softmax"]:
        if _scaled_scores_as_division(graph, softmax):
            moved += 1
            continue
        scores = softmax.inputs[0]
        reader, scores_in = softmax, 0
        if len(scores.inputs) == 1 and scores.inputs[0].op == "Add":  # a mask added to the scores
            reader = scores.inputs[0]
            scores_in = next((i for i, t in enumerate(reader.inputs)
                              if len(t.inputs) == 1 and t.inputs[0].op == "MatMul"), None)
            if scores_in is None:
                continue
            scores = reader.inputs[scores_in]
        if len(scores.inputs) != 1 or scores.inputs[0].op != "MatMul" or len(scores.outputs) != 1:
            continue
        matmul = scores.inputs[0]
        factors = [_scalar_factor(t) for t in matmul.inputs]
        if not any(factors):
            continue
        scale = 1.0
        for i, factor in enumerate(factors):
            if factor is not None:
                matmul.inputs[i] = factor[0]
                scale *= factor[1]
        dtype = scores.dtype if scores.dtype is not None else np.float32
        divisor = gs.Constant(fresh_name(graph, f"{matmul.name or 'qk'}_scale"), np.array(1.0 / scale, dtype=dtype))
        raw = gs.Variable(fresh_name(graph, f"{matmul.name or 'qk'}_unscaled"))
        matmul.outputs[0] = raw
        graph.nodes.append(gs.Node("Div", fresh_name(graph, f"{matmul.name or 'qk'}_div"), inputs=[raw, divisor],
                                   outputs=[scores]))
        moved += 1
    if moved:
        graph.cleanup().toposort()
    return moved


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, move)
