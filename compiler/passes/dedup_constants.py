"""Deduplicates identical initializers and Constant values (same dtype, shape and bytes)."""

from __future__ import annotations

from compiler.heavy import gs, onnx
from compiler.passes._gs import on_graph
from compiler.passes.args import PassInfo
from compiler.passes.fold_constants import hide_large_constants, restore
from compiler.weights import digest, nbytes


PASS = PassInfo(
    name="dedup_constants",
    summary="share identical initializers and constants",
)


PREFIX = 1 << 16


def _dedup(graph: gs.Graph) -> None:
    """Constants of the same dtype, shape and size are hashed (only those: a weight alone of its kind is never
    read), and readers of a duplicate read the first."""
    outputs = {id(t) for t in graph.outputs}
    uses = [(node, i, t) for node in graph.nodes for i, t in enumerate(node.inputs)
            if isinstance(t, gs.Constant) and id(t) not in outputs]
    kinds: dict[tuple, set[int]] = {}
    for _, _, t in uses:
        kinds.setdefault((str(t.dtype), tuple(t.shape), nbytes(t)), set()).add(id(t))
    head_of: dict[int, tuple] = {}   # then by their first PREFIX bytes: different weights differ there already
    heads: dict[tuple, set[int]] = {}
    for _, _, t in uses:
        kind = (str(t.dtype), tuple(t.shape), nbytes(t))
        if len(kinds[kind]) > 1 and id(t) not in head_of:
            head_of[id(t)] = (*kind, digest(t, PREFIX) if nbytes(t) > PREFIX else "")
            heads.setdefault(head_of[id(t)], set()).add(id(t))
    seen: dict[tuple, gs.Constant] = {}
    digests: dict[int, str] = {}
    for node, i, tensor in uses:
        kind = (str(tensor.dtype), tuple(tensor.shape), nbytes(tensor))
        if id(tensor) not in head_of or len(heads[head_of[id(tensor)]]) < 2:
            continue
        if id(tensor) not in digests:
            digests[id(tensor)] = digest(tensor)
        kept = seen.setdefault((*kind, digests[id(tensor)]), tensor)
        if kept is not tensor:
            node.inputs[i] = kept
    graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    # Constant nodes become initializers first (graphsurgeon's fold does that), so both are covered.
    def edit(graph: gs.Graph) -> None:
        hidden = hide_large_constants(graph)  # fold_constants says which nodes it leaves
        graph.fold_constants(fold_shapes=False, error_ok=True)
        restore(hidden)
        _dedup(graph)

    return on_graph(model, edit)
