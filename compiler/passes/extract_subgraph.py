"""Extracts the subgraph between the given tensor names (onnx.utils.Extractor)."""

from __future__ import annotations

from compiler.heavy import onnx
from compiler.passes.args import Arg, PassInfo


PASS = PassInfo(
    name="extract_subgraph",
    summary="keep only the subgraph between tensor names",
    args={"inputs": Arg("names", None, optional=True), "outputs": Arg("names", None, optional=True)},
)


def apply(model: onnx.ModelProto, inputs: list | None = None, outputs: list | None = None) -> onnx.ModelProto:
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = list(inputs or [i.name for i in graph.input if i.name not in initializers])
    outputs = list(outputs or [o.name for o in graph.output])
    extracted = onnx.utils.Extractor(model).extract_model(inputs, outputs)
    extracted.ir_version = model.ir_version
    return extracted
