"""Removes dead nodes and unused initializers; unused graph inputs only when asked.

Graph inputs are the model's interface (the IO spec, engine profiles and every caller feed them), so
an input no node reads stays unless `remove_unused_inputs` is set. Node outputs are positional: graphsurgeon
would drop every unused one and shift the rest (an LSTM whose sequence output Y nobody reads would hand its
Y_h to whoever reads Y_c), so an unused output is dropped only from the end of a node's outputs. Control flow:
graphsurgeon cleans every subgraph too and sees the values bodies read from outer scopes; the unused outputs
of If/Loop/Scan nodes are tied to their bodies' outputs and are all kept, at every depth.
"""

from __future__ import annotations

from compiler.heavy import gs, onnx
from compiler.passes._gs import on_graph
from compiler.passes.args import Arg, PassInfo


PASS = PassInfo(
    name="cleanup",
    summary="remove dead nodes and unused initializers (unused graph inputs with remove_unused_inputs)",
    args={
        "remove_unused_inputs": Arg("bool", False),
    },
)


CONTROL_FLOW = ("If", "Loop", "Scan")


def apply(model: onnx.ModelProto, remove_unused_inputs: bool = False) -> onnx.ModelProto:
    def edit(graph) -> None:
        held = _hold_positional_outputs(graph)
        graph.cleanup(remove_unused_graph_inputs=remove_unused_inputs, remove_unused_node_outputs=True)
        for owner, tensors in held:
            owner.outputs = [t for t in owner.outputs if all(t is not h for h in tensors)]
    return on_graph(model, edit)


def _hold_positional_outputs(graph) -> list:
    """Make the unused outputs the cleanup must keep (every one of an If/Loop/Scan node; of any other node,
    those before its last used output), at any depth, outputs of their graph for the cleanup; returns
    (graph, tensors) to release afterwards."""
    held = []
    for node in graph.nodes:
        unused = [not t.outputs and all(t is not o for o in graph.outputs) for t in node.outputs]
        keep = len(unused) if node.op in CONTROL_FLOW else max((i + 1 for i, u in enumerate(unused) if not u), default=0)
        extra = [t for t, u in zip(node.outputs[:keep], unused[:keep]) if u]
        if extra:
            graph.outputs.extend(extra)
            held.append((graph, extra))
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                held += _hold_positional_outputs(value)
    return held
