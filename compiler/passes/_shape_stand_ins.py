"""Ops that stand in for others during shape inference, where the two share a shape function.

- onnx's shape inference knows only onnx's own ops, and onnxruntime's symbolic inference knows some of
  onnxruntime's (its attention and normalisation ops), not the ones its quantizer and its offline optimizer
  write: every tensor after a DynamicQuantizeLSTM or a FusedConv is left without a shape, and a shape computation
  downstream cannot fold. Each contrib op in CONTRIB has, in onnxruntime's own schema, the shape function of the
  standard op it maps to on the inputs kept (a FusedConv is a Conv with an activation after it; a QLinearSigmoid
  keeps its input's shape and quantized type), and that op's output type.
- onnxruntime's symbolic inference computes a Conv's or a MatMul's dims as expressions of the input dims, but
  leaves ConvInteger, MatMulInteger, QLinearConv and QLinearMatMul to onnx, which can only name a new dim, and then
  gives up on the whole graph. SYMBOLIC maps them to the op whose dims it computes; their element types differ,
  so the caller takes types from onnx's inference, never from this one.

A stand-in lives only in the copy that inference reads; the model keeps its op. Element types are not checked by
onnx's inference, so quantized inputs may stand where the standard op takes floats.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.heavy import onnx


_MICROSOFT = "com.microsoft"


@dataclass(frozen=True)
class StandIn:
    op: str             # the standard op
    inputs: tuple       # indices of the inputs it takes, in its own order
    attributes: tuple   # the attributes it keeps
    unless: tuple = ()  # (attribute, value) pairs under which the shapes differ: no stand-in then


_CONV = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
_LSTM = ("activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size", "input_forget")

CONTRIB: dict[str, StandIn] = {   # com.microsoft ops
    "DynamicQuantizeLSTM": StandIn("LSTM", tuple(range(8)), _LSTM),
    "DynamicQuantizeMatMul": StandIn("MatMul", (0, 1), ()),
    "FusedConv": StandIn("Conv", (0, 1, 2), _CONV),
    "FusedGemm": StandIn("Gemm", (0, 1, 2), ("alpha", "beta", "transA", "transB")),
    "QLinearSigmoid": StandIn("Identity", (0,), ()),
    "QLinearLeakyRelu": StandIn("Identity", (0,), ()),
    "QLinearSoftmax": StandIn("Identity", (0,), ()),
    "QLinearGlobalAveragePool": StandIn("GlobalAveragePool", (0,), (), unless=(("channels_last", 1),)),
}
SYMBOLIC: dict[str, StandIn] = {  # onnx ops
    "ConvInteger": StandIn("Conv", (0, 1), _CONV),
    "MatMulInteger": StandIn("MatMul", (0, 1), ()),
    "QLinearConv": StandIn("Conv", (0, 3, 8), _CONV),
    "QLinearMatMul": StandIn("MatMul", (0, 3), ()),
}


def stand_in(node: onnx.NodeProto, symbolic: bool = False) -> None:
    """Turn `node` (in inference's copy) into its stand-in, where it has one. `symbolic`: for onnxruntime's
    symbolic inference, whose element types the caller does not use."""
    if node.domain == _MICROSOFT:
        entry = CONTRIB.get(node.op_type)
    else:
        entry = SYMBOLIC.get(node.op_type) if symbolic and node.domain in ("", "ai.onnx") else None
    if entry is None:
        return
    attributes = {a.name: a for a in node.attribute}
    if any(name in attributes and onnx.helper.get_attribute_value(attributes[name]) == value
           for name, value in entry.unless):
        return
    kept = [attributes[name] for name in entry.attributes if name in attributes]
    inputs = [node.input[i] if i < len(node.input) else "" for i in entry.inputs]
    while inputs and not inputs[-1]:
        inputs.pop()
    node.op_type, node.domain = entry.op, ""
    del node.input[:]
    node.input.extend(inputs)
    del node.attribute[:]
    node.attribute.extend(kept)
