"""Removes dead nodes and unused initializers; unused graph inputs only when asked.

Graph inputs are the model's interface (the IO spec, engine profiles and every caller feed them), so
an input no node reads stays unless `remove_unused_inputs` is set. Control flow: graphsurgeon cleans every
subgraph too and sees the values bodies read from outer scopes, but it would also drop the unused outputs of
If/Loop/Scan nodes, which are positional (tied to their bodies' outputs): those are kept, at every depth.
"""

from __future__ import annotations

import onnx

from compiler.passes._gs import on_graph


CONTROL_FLOW = ("If", "Loop", "Scan")


def apply(model: onnx.ModelProto, remove_unused_inputs: bool = False) -> onnx.ModelProto:
    def edit(graph) -> None:
        held = _hold_control_flow_outputs(graph)
        graph.cleanup(remove_unused_graph_inputs=remove_unused_inputs, remove_unused_node_outputs=True)
        for owner, tensors in held:
            owner.outputs = [t for t in owner.outputs if all(t is not h for h in tensors)]
    return on_graph(model, edit)


def _hold_control_flow_outputs(graph) -> list:
    """Make every unused output of an If/Loop/Scan node (at any depth) an output of its graph for the cleanup;
    returns (graph, tensors) to release afterwards."""
    import onnx_graphsurgeon as gs

    held = []
    for node in graph.nodes:
        if node.op in CONTROL_FLOW:
            extra = [t for t in node.outputs if not t.outputs and all(t is not o for o in graph.outputs)]
            if extra:
                graph.outputs.extend(extra)
                held.append((graph, extra))
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                held += _hold_control_flow_outputs(value)
    return held
