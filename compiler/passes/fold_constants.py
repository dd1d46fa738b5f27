"""Constant folding (with onnxruntime) through onnx-graphsurgeon.

Nodes that read a constant of LARGE_FOLD_BYTES or more are left as they are (the report lists them): folding
one runs a copy of that weight through onnxruntime, which is what keeps a big model's memory at its size.
"""

from __future__ import annotations

from compiler.heavy import gs, onnx
from compiler.passes._gs import on_graph
from compiler.passes.args import Arg, Noted, PassInfo
from compiler.weights import LARGE_FOLD_BYTES, nbytes, values_on_disk


PASS = PassInfo(
    name="fold_constants",
    summary="evaluate constant subgraphs (and static shape computations) into initializers",
    args={
        "fold_shapes": Arg("bool", True, help="fold Shape ops of static dims too"),
        "size_threshold": Arg("int", None, optional=True, minimum=0,
                              help="leave folded constants above this many bytes as computations"),
    },
)


def apply(model: onnx.ModelProto, fold_shapes: bool = True, size_threshold: int | None = None) -> Noted:
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # graphsurgeon's own sessions: its optimizer's notes are not ours
    notes: list[str] = []

    def fold(graph: gs.Graph) -> None:
        hidden = hide_large_constants(graph)
        notes.extend(unfolded_notes(hidden))
        graph.fold_constants(fold_shapes=fold_shapes, size_threshold=size_threshold, error_ok=False)
        restore(hidden)
        graph.cleanup()

    return Noted(on_graph(model, fold), tuple(notes))


def hide_large_constants(graph: gs.Graph, limit: int = LARGE_FOLD_BYTES) -> list[tuple[gs.Node, int, gs.Constant]]:
    """Stand a placeholder variable in for every large constant a node reads, so the fold leaves that node.
    Returns (node, input index, constant) to put back."""
    hidden = []
    for node in graph.nodes:
        for i, tensor in enumerate(node.inputs):
            if isinstance(tensor, gs.Constant) and nbytes(tensor) >= limit:
                node.inputs[i] = gs.Variable(f"{tensor.name}::large", dtype=tensor.dtype, shape=list(tensor.shape))
                hidden.append((node, i, tensor))
    for node in foldable_nodes(graph):  # read now: onnxruntime takes no weights on disk by path here
        for tensor in node.inputs:
            if isinstance(tensor, gs.Constant) and values_on_disk(tensor):
                tensor.values = tensor._values.load()
    return hidden


def unfolded_notes(hidden: list[tuple[gs.Node, int, gs.Constant]], limit: int = LARGE_FOLD_BYTES) -> list[str]:
    """What the report says of the nodes a fold leaves because they read a large constant (and nothing else)."""
    names = sorted({n.name or n.op for n, _, _ in hidden if all(isinstance(t, gs.Constant) or t.name.endswith(
        "::large") for t in n.inputs)})
    return [f"not folded: {len(names)} node(s) reading a constant of {limit >> 20} MiB or more "
            f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"] if names else []


def foldable_nodes(graph: gs.Graph) -> list[gs.Node]:
    """The nodes a fold evaluates: those whose every input is a constant or the output of such a node (a chain
    of Adds over three weights is one foldable region, not just its first node)."""
    graph.toposort()
    computed: set[int] = set()
    nodes = []
    for node in graph.nodes:
        if node.inputs and all(isinstance(t, gs.Constant) or id(t) in computed for t in node.inputs if t.name) \
                and node.op not in ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial") \
                and not any(isinstance(a, gs.Graph) for a in node.attrs.values()):
            computed.update(id(t) for t in node.outputs)
            nodes.append(node)
    return nodes


def restore(hidden: list[tuple[gs.Node, int, gs.Constant]]) -> None:
    for node, i, constant in hidden:
        if i < len(node.inputs) and node.inputs[i].name == f"{constant.name}::large":
            node.inputs[i] = constant
