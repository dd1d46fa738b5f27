"""Removes doc strings from the model, its graph and nodes (they hold exporter stack traces)."""

from __future__ import annotations

import onnx


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    return model
