"""What TensorRT's ONNX parser imports, per major version, in one table: the ops of a file it refuses, found at lint
(before any work) when the engine is TensorRT or TensorRT-RTX, each kind with what to do instead.

Measured with a real parser (TensorRT-RTX's, on the lent GPU): onnxruntime's contrib ops (its transformer
optimizer's output), QOperator int8 (QLinearConv), dynamic quantization (MatMulInteger) and ai.onnx.ml trees were
refused, raw and cleaned alike; an opset-23 `Attention` parsed but did not build.
"""

from __future__ import annotations

from typing import Any, Iterable

from compiler.errors import Problem

# kind -> (how ops of that kind are recognised, what to do instead)
QOPERATOR = ("QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearAveragePool",
             "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax")
DYNAMIC_QUANTIZATION = ("MatMulInteger", "ConvInteger", "DynamicQuantizeLinear")
FIXES = {
    "onnxruntime contrib ops (com.microsoft)": "these are onnxruntime's own fused ops (its transformer optimizer's "
    "output): use engine.backend=onnxruntime, or give TensorRT the model exported before that optimizer ran",
    "ai.onnx.ml ops": "TensorRT has no classical-ML ops (trees, encoders): use engine.backend=onnxruntime",
    "QOperator int8": "TensorRT takes int8 as Q/DQ: quantize the fp32 model with engine.precision=int8 "
    "(ModelOpt Q/DQ), or use engine.backend=onnxruntime for this file",
    "dynamic quantization": "TensorRT takes static Q/DQ only: quantize the fp32 model with engine.precision=int8 "
    "(calibrated Q/DQ), or use engine.backend=onnxruntime",
    "opset-23 Attention": "export with an opset below 23 (attention as MatMul/Softmax, which TensorRT fuses itself), "
    "or use engine.backend=onnxruntime",
}
# the kinds each TensorRT major version's parser refuses (TensorRT-RTX plans as the latest)
REFUSED = {10: tuple(FIXES), 11: tuple(FIXES)}


def kind_of(op_type: str, domain: str, opset: int) -> str | None:
    """The refused kind an op belongs to, or None where TensorRT's parser imports it."""
    if domain == "com.microsoft":
        return "onnxruntime contrib ops (com.microsoft)"
    if domain == "ai.onnx.ml":
        return "ai.onnx.ml ops"
    if domain in ("", "ai.onnx"):
        if op_type in QOPERATOR:
            return "QOperator int8"
        if op_type in DYNAMIC_QUANTIZATION:
            return "dynamic quantization"
        if op_type == "Attention" and opset >= 23:
            return "opset-23 Attention"
    return None


def refused_ops(nodes: Iterable[Any], opset: int, major: int) -> dict[str, list[str]]:
    """{kind: sorted op types} of the nodes TensorRT `major`'s parser refuses."""
    refused = REFUSED.get(major, REFUSED[max(REFUSED)])
    found: dict[str, set[str]] = {}
    for node in nodes:
        kind = kind_of(node.op_type, node.domain, opset)
        if kind in refused:
            found.setdefault(kind, set()).add(node.op_type)
    return {kind: sorted(ops) for kind, ops in found.items()}


def import_problems(model: Any, major: int, backend: str) -> list[Problem]:
    """One problem per refused kind in an ONNX file, with what to do instead."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    name = "TensorRT-RTX" if backend == "tensorrt_rtx" else f"TensorRT {major}"
    return [Problem("model.path", f"{name}'s ONNX parser does not import {kind}", ops,
                    f"ops {name}'s parser imports", fix=FIXES[kind])
            for kind, ops in refused_ops(nodes, opset, major).items()]
