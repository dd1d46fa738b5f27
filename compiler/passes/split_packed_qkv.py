"""Splits a packed Q/K/V projection into three projections, the form onnxruntime's attention fusion matches.

timm's ViT (`qkv` Linear -> reshape(B, N, 3, H, D) -> permute -> unbind), `nn.MultiheadAttention` (`in_proj` ->
unflatten(-1, (3, E)) -> ... -> proj[i]) and GPT-2 (`c_attn` -> split(E, dim=-1)), and our own
`fuse_parallel_matmuls`, compute q, k and v with one MatMul over weights [K, 3N] and cut the result into three
afterwards. onnxruntime's transformer optimizer looks for three MatMuls, one per projection; finding one, it
fuses nothing, and the attention runs unfused: Transposes, Softmax and batched MatMuls one by one.

The pass follows the packed result through shape-only ops (Reshape that brings out the axis of 3, Transpose,
Unsqueeze, Squeeze) to where it is cut (Gather of index 0/1/2, Split into three, three Slices), and writes each
branch on its own: MatMul with its third of the weights (and bias), the same shape ops with that axis taken out.
The branches compute exactly what the packed graph did. Anything it does not recognise is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import constant, fresh_name, on_graph, small_constant
from compiler.passes.args import PassInfo
from compiler.weights import values_on_disk


PASS = PassInfo(
    name="split_packed_qkv",
    summary="split a packed q/k/v projection (timm, GPT-2, nn.MultiheadAttention, fuse_parallel_matmuls) into three, "
            "the form onnxruntime's attention fusion matches (GPU engines do this)",
)


SHAPE_OPS = ("Reshape", "Transpose", "Unsqueeze", "Squeeze")
THREE = "T"     # the label of the axis that holds q, k, v
PACKED = "P"    # the label of the last axis while q, k, v still lie side by side in it


@dataclass
class Packed:
    """One packed projection and how its result is cut: the shape ops on the way (each with the axis labels
    before and after it) and the three tensors that end up holding q, k and v."""

    matmul: gs.Node
    weight: np.ndarray
    bias: np.ndarray | None
    bias_node: gs.Node | None
    chain: list[tuple[gs.Node, list[str], list[str]]] = field(default_factory=list)
    cut: list[gs.Node] = field(default_factory=list)          # the nodes that cut (removed with the chain)
    parts: list[gs.Variable] = field(default_factory=list)     # q, k, v as the rest of the graph reads them


def _axes(node: gs.Node) -> list[int] | None:
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1:
        value = small_constant(node.inputs[1], 16)
        return None if value is None else [int(a) for a in np.atleast_1d(value)]
    return None


def _step(node: gs.Node, labels: list[str], width: int) -> list[str] | None:
    """The axis labels after one shape op, or None where the op is not one this pass can follow."""
    rank = len(labels)
    if node.op == "Reshape":
        shape = small_constant(node.inputs[1], 16)
        if shape is None or THREE in labels or labels[-1] != PACKED or node.attrs.get("allowzero", 0):
            return None
        shape = [int(s) for s in shape]
        # leading 1s may come first: an Unsqueeze(0) merged into the Reshape (merge_transposes_reshapes)
        for lead in range(max(len(shape) - rank, 0)):
            if any(s != 1 for s in shape[:lead]):
                break
            kept = shape[lead:]
            rest = kept[rank:]
            if len(kept) >= rank + 1 and kept[rank - 1] == 3 and not any(s in (0, -1) for s in kept[rank - 1:]) \
                    and int(np.prod(rest, dtype=np.int64)) == width:
                return [f"u{i}_{id(node)}" for i in range(lead)] + labels[:-1] + [THREE] + \
                    [f"r{i}" for i in range(len(rest))]
        return None
    if node.op == "Transpose":
        perm = [int(p) for p in node.attrs.get("perm", range(rank - 1, -1, -1))]
        return [labels[p] for p in perm] if sorted(perm) == list(range(rank)) else None
    axes = _axes(node)
    if axes is None:
        return None
    if node.op == "Unsqueeze":
        out_rank = rank + len(axes)
        new = sorted(a % out_rank for a in axes)
        rest, out = iter(labels), []
        for i in range(out_rank):
            out.append(f"u{i}_{id(node)}" if i in new else next(rest))
        return out
    removed = {a % rank for a in axes}  # Squeeze
    if any(labels[a] in (THREE, PACKED) for a in removed):
        return None
    return [label for i, label in enumerate(labels) if i not in removed]


def _cut(tensor: gs.Variable, labels: list[str], width: int) -> tuple[list[gs.Node], list] | None:
    """How the tensor is cut into q, k, v: (the cutting nodes, the three tensors in order), or None."""
    readers = list(tensor.outputs)
    if THREE in labels:
        axis = labels.index(THREE)
        gathers = {}
        for r in readers:
            index = small_constant(r.inputs[1], 1) if r.op == "Gather" and len(r.inputs) > 1 else None
            if index is None or index.ndim != 0 or r.attrs.get("axis", 0) % len(labels) != axis:
                break
            gathers[int(index) % 3] = r
        else:
            if sorted(gathers) == [0, 1, 2] and len(readers) == 3:
                return readers, [gathers[i].outputs[0] for i in range(3)]
        if len(readers) == 1 and readers[0].op == "Split" and _equal_thirds(readers[0], axis, len(labels), 1):
            squeezes = [only for out in readers[0].outputs if len(out.outputs) == 1
                        for only in [out.outputs[0]] if only.op == "Squeeze"
                        and [a % len(labels) for a in (_axes(only) or [])] == [axis]]
            if len(squeezes) == 3:
                return [readers[0], *squeezes], [s.outputs[0] for s in squeezes]
        return None
    axis = len(labels) - 1
    if len(readers) == 1 and readers[0].op == "Split" and _equal_thirds(readers[0], axis, len(labels), width):
        return readers, list(readers[0].outputs)
    if len(readers) == 3 and all(r.op == "Slice" for r in readers):
        order = {}
        for r in readers:
            values = [small_constant(t, 4) for t in r.inputs[1:]]
            if any(v is None for v in values) or len(values) < 3:
                return None
            starts, ends, axes = (np.atleast_1d(v).tolist() for v in values[:3])
            steps = np.atleast_1d(values[3]).tolist() if len(values) > 3 else [1]
            if len(starts) != 1 or axes[0] % len(labels) != axis or steps != [1]:
                return None
            start, end = int(starts[0]), min(int(ends[0]), 3 * width)
            if start % width or end - start != width:
                return None
            order[start // width] = r
        if sorted(order) == [0, 1, 2]:
            return readers, [order[i].outputs[0] for i in range(3)]
    return None


def _equal_thirds(split: gs.Node, axis: int, rank: int, width: int) -> bool:
    if len(split.outputs) != 3 or split.attrs.get("axis", 0) % rank != axis:
        return False
    sizes = split.attrs.get("split")
    if sizes is None and len(split.inputs) > 1:
        sizes = small_constant(split.inputs[1], 8)
    return sizes is None or [int(s) for s in np.atleast_1d(sizes)] == [width] * 3


def _packed(graph: gs.Graph) -> list[Packed]:
    found, outputs = [], {id(t) for t in graph.outputs}
    for node in graph.nodes:
        if node.op != "MatMul" or len(node.inputs) != 2 or not isinstance(node.inputs[1], gs.Constant):
            continue
        if values_on_disk(node.inputs[1]):
            continue  # a weight on disk is never pulled into memory to be split (weights.py)
        weight = node.inputs[1].values
        rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else None
        if weight.ndim != 2 or weight.shape[1] % 3 or rank is None or rank < 2:
            continue
        width, tensor = weight.shape[1] // 3, node.outputs[0]
        bias, bias_node = None, None
        reader = tensor.outputs[0] if len(tensor.outputs) == 1 else None
        if reader is not None and reader.op == "Add":
            other = [t for t in reader.inputs if t is not tensor]
            value = constant(other[0]) if len(other) == 1 else None
            if value is not None and value.shape == (3 * width,):
                bias, bias_node, tensor = value, reader, reader.outputs[0]
        packed = Packed(node, weight, bias, bias_node)
        labels = [f"a{i}" for i in range(rank - 1)] + [PACKED]
        while id(tensor) not in outputs:
            cut = _cut(tensor, labels, width)
            if cut is not None:
                packed.cut, packed.parts = cut
                found.append(packed)
                break
            reader = tensor.outputs[0] if len(tensor.outputs) == 1 else None
            after = _step(reader, labels, width) if reader is not None and reader.op in SHAPE_OPS else None
            if after is None:
                break
            packed.chain.append((reader, labels, after))
            labels, tensor = after, reader.outputs[0]
    return found


def _branch_node(graph: gs.Graph, node: gs.Node, before: list[str], after: list[str], x: gs.Variable,
                 name: str) -> gs.Variable:
    """The shape op `node` for one branch: the same op with the axis of 3 taken out."""
    b_before, b_after = [l for l in before if l != THREE], [l for l in after if l != THREE]
    out = gs.Variable(fresh_name(graph, name))  # no value_info: a type without a shape fails the checker
    attrs, inputs = {}, [x]
    if node.op == "Reshape":
        shape = [int(s) for s in small_constant(node.inputs[1], 16)]
        three = after.index(THREE)
        inputs.append(gs.Constant(fresh_name(graph, f"{name}_shape"),
                                  np.array(shape[:three] + shape[three + 1:], dtype=np.int64)))
    elif node.op == "Transpose":
        attrs["perm"] = [b_before.index(l) for l in b_after]
    else:
        axes = [b_after.index(l) for l in b_after if l not in b_before] if node.op == "Unsqueeze" else \
            [b_before.index(l) for l in b_before if l not in b_after]
        if "axes" in node.attrs:
            attrs["axes"] = axes
        else:
            inputs.append(gs.Constant(fresh_name(graph, f"{name}_axes"), np.array(axes, dtype=np.int64)))
    graph.nodes.append(gs.Node(node.op, fresh_name(graph, name), attrs=attrs, inputs=inputs, outputs=[out]))
    return out


def _split(graph: gs.Graph, p: Packed) -> None:
    width, base = p.weight.shape[1] // 3, p.matmul.name or "qkv"
    x, ends = p.matmul.inputs[0], []
    for i, letter in enumerate("qkv"):
        name = f"{base}_{letter}"
        w = gs.Constant(fresh_name(graph, f"{name}_weight"), np.ascontiguousarray(p.weight[:, i * width:(i + 1) * width]))
        t = gs.Variable(fresh_name(graph, f"{name}_matmul"))
        graph.nodes.append(gs.Node("MatMul", fresh_name(graph, name), inputs=[x, w], outputs=[t]))
        if p.bias is not None:
            b = gs.Constant(fresh_name(graph, f"{name}_bias"), np.ascontiguousarray(p.bias[i * width:(i + 1) * width]))
            added = gs.Variable(fresh_name(graph, f"{name}_add"))
            graph.nodes.append(gs.Node("Add", fresh_name(graph, f"{name}_add"), inputs=[t, b], outputs=[added]))
            t = added
        for step, (node, before, after) in enumerate(p.chain):
            t = _branch_node(graph, node, before, after, t, f"{name}_{node.op.lower()}{step}")
        ends.append(t.inputs[0])
    for node in [p.matmul, *([p.bias_node] if p.bias_node else []), *(n for n, _, _ in p.chain), *p.cut]:
        node.inputs.clear()
        node.outputs.clear()
    for producer, part in zip(ends, p.parts):  # each branch writes the tensor the graph reads as q, k or v
        producer.outputs[0] = part


def split(graph: gs.Graph) -> int:
    """Split every packed projection the graph has; return how many."""
    found = _packed(graph)
    for packed in found:
        _split(graph, packed)
    if found:
        graph.cleanup().toposort()
    return len(found)


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, split, infer=True)
