"""Removes doc strings from the model, its graph and nodes (they hold exporter stack traces)."""

from __future__ import annotations

from compiler.heavy import onnx
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="strip_doc_strings",
    summary="remove doc strings (exporter stack traces)",
)


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    return model
