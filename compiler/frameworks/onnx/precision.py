"""What an ONNX file already computes in: int8 (QDQ or QOperator), int4 (MatMulNBits, 4-bit DequantizeLinear),
fp8, fp16 or bf16, or fp32.

A file that computes in reduced precision cannot meet fp32's 1e-4: onnxruntime runs it with fused int8/int4/fp16
kernels in the engine and emulates the same graph op by op in the reference, and the two round differently by
design. Such a file is judged like a converted model, by agreement (relative L2, cosine, argmax) with the file run
as written, with the budgets of the precision it computes in; the report says why.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

INT4_OPS = ("MatMulNBits", "GatherBlockQuantized", "MatMulBnb4")
INT8_OPS = ("QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool",
            "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QGemm", "QAttention",
            "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
            "MatMulIntegerToFloat", "QOrderedMatMul")
COMPUTE_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "MultiHeadAttention", "LSTM", "GRU")


def computed_precision(model: Any) -> Optional[tuple[str, str]]:
    """(the precision the file computes in, the ops that say so), or None for fp32. Reads node types and
    element types only (no weight is read)."""
    from onnx import TensorProto

    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    ops = Counter(n.op_type for n in nodes)
    found = {op: ops[op] for op in INT4_OPS if ops[op]}
    if found:
        return "int4", _words(found)
    types = {i.name: i.data_type for i in model.graph.initializer}
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        types.setdefault(value.name, value.type.tensor_type.elem_type)
    dequantized = Counter(types.get(n.input[0]) for n in nodes if n.op_type == "DequantizeLinear" and n.input)
    if dequantized[TensorProto.INT4] or dequantized[TensorProto.UINT4]:
        return "int4", _words({"4-bit DequantizeLinear": dequantized[TensorProto.INT4] + dequantized[TensorProto.UINT4]})
    fp8 = sum(dequantized[t] for t in (TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
                                       TensorProto.FLOAT8E5M2FNUZ))
    if fp8:
        return "fp8", _words({"fp8 DequantizeLinear": fp8})
    found = {op: ops[op] for op in INT8_OPS if ops[op]}
    if ops["QuantizeLinear"] or ops["DequantizeLinear"]:
        found["QuantizeLinear/DequantizeLinear"] = ops["QuantizeLinear"] + ops["DequantizeLinear"]
    if found:
        return "int8", _words(found)
    for half, name in ((TensorProto.FLOAT16, "fp16"), (TensorProto.BFLOAT16, "bf16")):
        computing = sum(1 for n in nodes if n.op_type in COMPUTE_OPS and any(types.get(i) == half for i in n.input))
        if computing:
            return name, f"{computing} {'/'.join(COMPUTE_OPS[:4])} nodes read {name} tensors"
    return None


def _words(found: dict[str, int]) -> str:
    return ", ".join(f"{op} x{n}" for op, n in sorted(found.items()))
