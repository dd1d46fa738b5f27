"""Removes dead nodes and unused initializers; unused graph inputs only when asked.

Graph inputs are the model's interface (the IO spec, engine profiles and every caller feed them), so
an input no node reads stays unless `remove_unused_inputs` is set.
"""

from __future__ import annotations

import onnx

from compiler.passes._gs import on_graph


def apply(model: onnx.ModelProto, remove_unused_inputs: bool = False) -> onnx.ModelProto:
    return on_graph(model, lambda g: g.cleanup(remove_unused_graph_inputs=remove_unused_inputs,
                                               remove_unused_node_outputs=True))
