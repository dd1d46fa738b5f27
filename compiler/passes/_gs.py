"""onnx <-> onnx-graphsurgeon round trip shared by graphsurgeon-based passes."""

from __future__ import annotations

from typing import Callable

import onnx
import onnx_graphsurgeon as gs


def on_graph(model: onnx.ModelProto, edit: Callable[[gs.Graph], None]) -> onnx.ModelProto:
    """Apply `edit` to the model's graphsurgeon graph and export it, keeping opsets and metadata."""
    graph = gs.import_onnx(model)
    edit(graph)
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    return out
