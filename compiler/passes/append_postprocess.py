"""Appends Softmax and/or ArgMax after an output, as extra graph outputs (the original stays)."""

from __future__ import annotations

from compiler.heavy import onnx
from compiler.passes.args import Arg, PassInfo


PASS = PassInfo(
    name="append_postprocess",
    summary="append Softmax/ArgMax outputs after an output",
    args={
        "output": Arg("str", None, optional=True, help="the output to read (default: the first)"),
        "softmax": Arg("str", "probabilities", optional=True),
        "argmax": Arg("str", "labels", optional=True),
        "axis": Arg("int", -1, minimum=-32, maximum=31),
        "keep_input": Arg("bool", True),
    },
)


def apply(model: onnx.ModelProto, output: str | None = None, softmax: str | None = "probabilities",
          argmax: str | None = "labels", axis: int = -1, keep_input: bool = True) -> onnx.ModelProto:
    """`softmax`/`argmax` name the new outputs (null: not added); `output` defaults to the first."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    source = output or graph.output[0].name
    if source not in {o.name for o in graph.output}:
        raise ValueError(f"no graph output named {source!r}")
    if softmax:
        graph.node.append(onnx.helper.make_node("Softmax", [source], [softmax], axis=axis, name=f"{softmax}_softmax"))
        graph.output.append(onnx.helper.make_tensor_value_info(softmax, onnx.TensorProto.FLOAT, None))
    if argmax:
        graph.node.append(onnx.helper.make_node("ArgMax", [source], [argmax], axis=axis, keepdims=0, name=f"{argmax}_argmax"))
        graph.output.append(onnx.helper.make_tensor_value_info(argmax, onnx.TensorProto.INT64, None))
    if not keep_input:
        kept = [o for o in graph.output if o.name != source]
        del graph.output[:]
        graph.output.extend(kept)
    return onnx.shape_inference.infer_shapes(model)
