"""Sequence-first attention rewritten batch-first, the layout onnxruntime's attention fusion matches.

`nn.MultiheadAttention` (and OpenAI's CLIP, which uses it) computes attention sequence-first: the input
[B, L, E] is transposed to [L, B, E], each projection's output is reshaped to [L, B*H, D], transposed to
[B*H, L, D] and reshaped to [B, H, L, D]; after the scores, the context goes back through [L, B, E] to the
output projection and is transposed to [B, L, E] again. onnxruntime's fusion looks for BERT's form: projections
of the [B, L, E] input, each reshaped to [B, L, H, D] and transposed to [B, H, L, D], the context transposed back
and reshaped to [B, L, E] before its projection. Finding the other, it fuses nothing.

The rewrite projects the batch-first input and writes BERT's reshapes, keeping the exported scores, softmax
and weights. It is made only where it is exact: each exported chain of reshapes and transposes is replayed on
index tensors (numpy, at two batch sizes) and must move every element where BERT's form moves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from compiler.passes._gs import constant, fresh_name, small_constant

LAYOUT_OPS = ("Reshape", "Transpose", "Unsqueeze", "Squeeze")
BATCHES = (2, 3)   # the batch sizes the chains are replayed at where the batch is dynamic (it must work at any)


@dataclass
class Projection:
    """x @ weight + bias as the export wrote it: a MatMul by a constant [E, N] and an Add of a constant [N], or a
    Gemm (transB taken into account)."""

    source: Any          # the tensor projected
    weight: np.ndarray   # [E, N]
    bias: np.ndarray


def batch_first_attention(graph: gs.Graph) -> int:
    """Rewrite each sequence-first attention the replay proves equivalent; the number rewritten."""
    rewritten = 0
    for softmax in [n for n in graph.nodes if n.op == "Softmax"]:
        found = _match(softmax)
        if found is not None and _rewrite(graph, *found):
            rewritten += 1
    if rewritten:
        graph.cleanup().toposort()
    return rewritten


def _match(softmax: gs.Node) -> tuple | None:
    """(scores MatMul, context MatMul, q/k/v chains and projections, the output chain) around one Softmax."""
    scores = _producer(softmax.inputs[0])
    if scores is not None and scores.op in ("Div", "Mul") and small_constant(scores.inputs[1], 1) is not None:
        scores = _producer(scores.inputs[0])
    readers = softmax.outputs[0].outputs
    if scores is None or scores.op != "MatMul" or len(readers) != 1 or readers[0].op != "MatMul" \
            or readers[0].inputs[0] is not softmax.outputs[0]:
        return None
    context = readers[0]
    branches = [_up(t) for t in (scores.inputs[0], scores.inputs[1], context.inputs[1])]
    if any(b is None for b in branches):
        return None
    sources = {id(p.source) for _, p in branches}
    source = branches[0][1].source
    head = _producer(source)
    if len(sources) != 1 or head is None or head.op != "Transpose" or list(head.attrs.get("perm", [])) != [1, 0, 2]:
        return None   # not sequence-first (batch-first attention is BERT's form already)
    down = _down(context.outputs[0])
    if down is None:
        return None
    return scores, context, head.inputs[0], branches, down


def _producer(tensor: Any) -> gs.Node | None:
    return tensor.inputs[0] if isinstance(tensor, gs.Variable) and len(tensor.inputs) == 1 else None


def _projection(tensor: Any) -> Projection | None:
    node = _producer(tensor)
    if node is None:
        return None
    if node.op == "Gemm" and len(node.inputs) == 3 and not node.attrs.get("transA", 0) \
            and node.attrs.get("alpha", 1.0) == 1.0 and node.attrs.get("beta", 1.0) == 1.0:
        weight, bias = constant(node.inputs[1]), small_constant(node.inputs[2], 1 << 16)
        if weight is None or bias is None or bias.ndim != 1:
            return None
        return Projection(node.inputs[0], weight.T if node.attrs.get("transB", 0) else weight, bias)
    if node.op != "Add":
        return None
    for i in (0, 1):
        matmul, bias = _producer(node.inputs[i]), small_constant(node.inputs[1 - i], 1 << 16)
        if matmul is not None and matmul.op == "MatMul" and bias is not None and bias.ndim == 1:
            weight = constant(matmul.inputs[1])
            if weight is not None and weight.ndim == 2 and len(matmul.outputs[0].outputs) == 1:
                return Projection(matmul.inputs[0], weight, bias)
    return None


def _up(tensor: Any) -> tuple[list[gs.Node], Projection] | None:
    """The layout ops from a projection's output down to `tensor` (in order), and the projection."""
    chain: list[gs.Node] = []
    while True:
        projection = _projection(tensor)
        if projection is not None:
            return chain[::-1], projection
        node = _producer(tensor)
        if node is None or node.op not in LAYOUT_OPS or len(chain) > 8:
            return None
        chain.append(node)
        tensor = node.inputs[0]


def _down(tensor: Any) -> tuple[list[gs.Node], Projection, list[gs.Node], Any] | None:
    """From the context: layout ops, the output projection, layout ops, and the tensor they end in."""
    before: list[gs.Node] = []
    while True:
        readers = tensor.outputs
        if len(readers) != 1:
            return None
        node = readers[0]
        if node.op in LAYOUT_OPS and node.inputs[0] is tensor and len(before) <= 8:
            before.append(node)
            tensor = node.outputs[0]
            continue
        out = node.outputs[0]
        if node.op == "MatMul" and len(out.outputs) == 1 and out.outputs[0].op == "Add":
            out = out.outputs[0].outputs[0]   # the bias
        projection = _projection(out) if node.op in ("Gemm", "MatMul") else None
        if projection is None or projection.source is not tensor:
            return None
        break
    after: list[gs.Node] = []
    tensor = out
    while len(tensor.outputs) == 1 and tensor.outputs[0].op in LAYOUT_OPS and len(after) <= 8:
        after.append(tensor.outputs[0])
        tensor = tensor.outputs[0].outputs[0]
    return before, projection, after, tensor


# --- the replay --------------------------------------------------------------------------------------------

def _replay(chain: list[gs.Node], x: np.ndarray) -> np.ndarray | None:
    """The layout ops applied to an index tensor, as onnxruntime would; None where one cannot be replayed."""
    for node in chain:
        if node.op == "Transpose":
            perm = node.attrs.get("perm")
            x = np.transpose(x, perm if perm is None else list(perm))
            continue
        if node.op == "Reshape":
            shape = small_constant(node.inputs[1], 16)
            if shape is None or (node.attrs.get("allowzero", 0) and 0 in shape):
                return None   # allowzero matters only where the target holds a 0
            target = [x.shape[i] if int(s) == 0 else int(s) for i, s in enumerate(shape)]
            try:
                x = x.reshape(target)
            except ValueError:
                return None
            continue
        axes = node.attrs.get("axes")
        if axes is None and len(node.inputs) > 1:
            value = small_constant(node.inputs[1], 16)
            axes = None if value is None else [int(a) for a in np.atleast_1d(value)]
        if node.op == "Unsqueeze" and axes is not None:
            for axis in sorted(a % (x.ndim + len(axes)) for a in axes):
                x = np.expand_dims(x, axis)
        elif node.op == "Squeeze":
            x = np.squeeze(x, axis=None if axes is None else tuple(axes))
        else:
            return None
    return x


def _heads(chains: list[list[gs.Node]], width: int) -> list[int]:
    """Candidate head sizes: the last entries of the chains' reshape targets that divide the width."""
    sizes = set()
    for chain in chains:
        for node in chain:
            if node.op == "Reshape":
                shape = small_constant(node.inputs[1], 16)
                if shape is not None and len(shape) and int(shape[-1]) > 0 and width % int(shape[-1]) == 0:
                    sizes.add(int(shape[-1]))
    return sorted(sizes - {width})


def _exact(branches: list, down: tuple, batches: tuple[int, ...], seq: int, width: int, head: int) -> bool:
    """Every chain moves every element where BERT's form moves it, at each replayed batch size."""
    before, out_proj, after, _ = down
    heads = width // head
    for batch in batches:
        projected = np.arange(batch * seq * width).reshape(batch, seq, width)    # x @ W + b, batch-first
        split = projected.reshape(batch, seq, heads, head)
        wanted = (split.transpose(0, 2, 1, 3), split.transpose(0, 2, 3, 1), split.transpose(0, 2, 1, 3))
        for (chain, _), target in zip(branches, wanted):
            got = _replay(chain, projected.transpose(1, 0, 2))                    # the export projects [L, B, E]
            if got is None or got.shape != target.shape or not np.array_equal(got, target):
                return False
        context = np.arange(batch * heads * seq * head).reshape(batch, heads, seq, head)
        rows = context.transpose(0, 2, 1, 3).reshape(batch, seq, width)          # BERT: [B, L, E] before out proj
        got = _replay(before, context)
        if got is None or got.shape[-1] != width or out_proj.weight.shape[1] != width:
            return False
        index = {tuple(r): i for i, r in enumerate(rows.reshape(-1, width))}
        if any(tuple(r) not in index for r in got.reshape(-1, width)):
            return False   # the projection must see whole rows of BERT's layout
        whole = _replay(after, got)   # the projection keeps the width: replayed as the identity on each row
        if whole is None or whole.shape != rows.shape or not np.array_equal(whole, rows):
            return False
        row_ids = np.repeat(np.arange(got.size // width), width).reshape(got.shape)
        moved = _replay(after, row_ids)
        if moved is None or not all(len(set(r)) == 1 for r in moved.reshape(-1, width)):
            return False   # after the projection, rows move whole
    return True


def _rewrite(graph: gs.Graph, scores: gs.Node, context: gs.Node, source: Any, branches: list, down: tuple) -> bool:
    shape = getattr(source, "shape", None)
    width = branches[0][1].weight.shape[1]
    if shape is None or len(shape) != 3 or not isinstance(shape[1], int) or \
            any(p.weight.shape != (width, width) for _, p in branches):
        return False
    seq, batches = int(shape[1]), (int(shape[0]),) if isinstance(shape[0], int) else BATCHES
    head = next((h for h in _heads([c for c, _ in branches], width)
                 if _exact(branches, down, batches, seq, width, h)), None)
    if head is None:
        return False
    dtype = branches[0][1].weight.dtype
    name = fresh_name(graph, f"{context.name or 'attention'}_batch_first")

    def tensor(suffix: str) -> gs.Variable:
        return gs.Variable(fresh_name(graph, f"{name}_{suffix}"), dtype=dtype)

    def project(x: Any, p: Projection, tag: str, out: gs.Variable | None = None) -> gs.Variable:
        product, out = tensor(f"{tag}_matmul"), out if out is not None else tensor(f"{tag}_proj")
        graph.nodes += [gs.Node("MatMul", f"{name}_{tag}_matmul", inputs=[x, gs.Constant(f"{name}_{tag}_w", p.weight)],
                                outputs=[product]),
                        gs.Node("Add", f"{name}_{tag}_bias", inputs=[product, gs.Constant(f"{name}_{tag}_b", p.bias)],
                                outputs=[out])]
        return out

    def layout(x: Any, tag: str, target: list[int], perm: list[int]) -> gs.Variable:
        shaped, out = tensor(f"{tag}_reshape"), tensor(f"{tag}_heads")
        graph.nodes += [gs.Node("Reshape", f"{name}_{tag}_reshape",
                                inputs=[x, gs.Constant(f"{name}_{tag}_shape", np.array(target, np.int64))],
                                outputs=[shaped]),
                        gs.Node("Transpose", f"{name}_{tag}_transpose", attrs={"perm": perm}, inputs=[shaped],
                                outputs=[out])]
        return out

    heads = width // head
    perms = ([0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3])
    q, k, v = (layout(project(source, p, tag), tag, [0, 0, heads, head], perm)
               for (_, p), tag, perm in zip(branches, "qkv", perms))
    scores.inputs[0], scores.inputs[1], context.inputs[1] = q, k, v
    _, out_proj, _, end = down
    merged = tensor("context")
    moved = tensor("context_transposed")
    graph.nodes += [gs.Node("Transpose", f"{name}_context_transpose", attrs={"perm": [0, 2, 1, 3]},
                            inputs=[context.outputs[0]], outputs=[moved]),
                    gs.Node("Reshape", f"{name}_context_reshape",
                            inputs=[moved, gs.Constant(f"{name}_context_shape", np.array([0, 0, width], np.int64))],
                            outputs=[merged])]
    old = end.inputs[0]   # the exported path's last op no longer writes `end`: the batch-first projection does
    old.outputs[old.outputs.index(end)] = tensor("unused")
    project(merged, out_proj, "out", end)
    return True
