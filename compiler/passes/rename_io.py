"""Renames graph inputs and outputs (and every reference to them)."""

from __future__ import annotations

from compiler.heavy import onnx
from compiler.passes.args import Arg, PassInfo


PASS = PassInfo(
    name="rename_io",
    summary="rename graph inputs/outputs",
    args={"inputs": Arg("renames", None, optional=True), "outputs": Arg("renames", None, optional=True)},
)


def apply(model: onnx.ModelProto, inputs: dict | None = None, outputs: dict | None = None) -> onnx.ModelProto:
    renames = {**(inputs or {}), **(outputs or {})}
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    known = {v.name for v in [*graph.input, *graph.output]}
    missing = sorted(set(renames) - known)
    if missing:
        raise ValueError(f"no graph input/output named {missing}; the graph has {sorted(known)}")
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    return model
