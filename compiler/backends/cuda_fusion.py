"""onnxruntime's transformer fusions for an engine on its CUDA provider, on the exporters' real graphs.

onnxruntime's optimizer fuses attention into one `Attention` kernel (and LayerNorm, SkipLayerNorm, Gelu, ...)
where it finds BERT's pattern: three projections, the scores scaled after q·kᵀ. Real exports differ: timm, GPT-2
and `nn.MultiheadAttention` pack q/k/v into one projection, timm and torch's SDPA export scale q and k
before the product, and `nn.MultiheadAttention` computes sequence-first. Rewrites bring such graphs to the
matched form first (split_packed_qkv, scale_after_qk, attention_layout; each exact up to one rounding), then the
optimizer runs with the model type, head count and hidden size read from the graph. The fused ops are onnxruntime's own (com.microsoft): for onnxruntime GPU engines only.
A fusion can match what it should not (the bert fusion of a causal text tower drops its mask), so each fused graph
is run beside the exported one on a few calibration inputs and kept only where it computes the same (OutputCheck).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from compiler import weights
from compiler.errors import describe
from compiler.heavy import gs, onnx
from compiler.onnx_files import has_external_data, save_model
from compiler.passes import eliminate_noops, merge_transposes_reshapes, scale_after_qk, split_packed_qkv
from compiler.passes._gs import bypass, fresh_name, on_graph, small_constant


def transformer_params(model: Any) -> dict[str, Any]:
    """The optimizer's model type, head count and hidden size, read from the graph: heads and hidden from the
    Reshapes that split a projection's output into [.., .., heads, head size] (the most common pair), the type
    `gpt2` where a causal mask is present (a Trilu, or a constant lower-triangular [1, 1, S, S] mask), else
    `bert` (encoders: BERT, ViT, CLIP). 0 where no attention is found: the optimizer then looks itself."""
    from onnx import numpy_helper

    graph = model.graph
    consts = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}

    def value(name: str, limit: int = 16) -> np.ndarray | None:
        init = consts.get(name)
        if init is not None and np.prod(init.dims, dtype=np.int64) <= limit:
            return numpy_helper.to_array(init)
        node = producers.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute:
            array = numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].HasField("t") else None
            return array if array is not None and array.size <= limit else None
        return None

    def projection_width(name: str) -> int | None:
        node = producers.get(name)
        if node is not None and node.op_type == "Add":
            node = next((producers.get(i) for i in node.input if producers.get(i) is not None
                         and producers[i].op_type == "MatMul"), None)
        if node is None or node.op_type != "MatMul" or node.input[1] not in consts:
            return None
        dims = consts[node.input[1]].dims
        return int(dims[1]) if len(dims) == 2 else None

    pairs: Counter = Counter()
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        shape = value(node.input[1])
        width = projection_width(node.input[0])
        if shape is None or not width or shape.size != 4 or shape[3] <= 0 or width % int(shape[3]):
            continue
        heads = width // int(shape[3])  # [0, 0, -1, head size] (transformers) names the heads only through the width
        if shape[2] in (-1, heads):
            pairs[(heads, width)] += 1
    heads, hidden = pairs.most_common(1)[0][0] if pairs else (0, 0)
    return {"model_type": "gpt2" if _causal(graph) else "bert", "num_heads": heads, "hidden_size": hidden}


def _causal(graph: Any) -> bool:
    from onnx import TensorProto, numpy_helper

    if any(n.op_type == "Trilu" for n in graph.node):
        return True
    for init in graph.initializer:
        dims = list(init.dims)
        if len(dims) == 4 and dims[0] == dims[1] == 1 and dims[2] == dims[3] >= 2 and \
                init.data_type in (TensorProto.BOOL, TensorProto.UINT8) and dims[2] <= 4096:
            mask = numpy_helper.to_array(init)[0, 0].astype(bool)
            if np.array_equal(mask, np.tril(np.ones_like(mask))):
                return True
    return False


def add_zero_biases(graph: Any) -> int:
    """Every projection (MatMul by a constant [K, N] weight) without a bias gets an Add of zeros. Exporters write
    Linear's bias as an Add, and the fusions' patterns start there (MatMul -> Add -> Reshape for q, k, v; the
    output projection's Add before SkipLayerNorm; Add -> Gelu for BiasGelu); eliminate_noops takes out a bias
    that is all zeros (a freshly initialised model's), and with it the pattern. Adding zeros changes no value,
    and the fused kernels take the bias as an input anyway."""

    added = 0
    for matmul in [n for n in graph.nodes if n.op == "MatMul" and len(n.inputs) == 2]:
        weight, out = matmul.inputs[1], matmul.outputs[0]
        if not isinstance(weight, gs.Constant) or len(weight.shape) != 2 or not out.outputs:
            continue
        if any(c.op == "Add" and any(t is not out and small_constant(t, 1 << 20) is not None
                                     and len(getattr(t, "shape", None) or []) == 1 for t in c.inputs)
               for c in out.outputs):
            continue  # it has its bias
        dtype = np.float16 if "float16" in str(weight.dtype) else np.float32
        zeros = gs.Constant(fresh_name(graph, f"{matmul.name or 'proj'}_zero_bias"), np.zeros(weight.shape[1], dtype))
        biased = gs.Variable(fresh_name(graph, f"{matmul.name or 'proj'}_biased"))
        for consumer in list(out.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is out:
                    consumer.inputs[i] = biased
        graph.nodes.append(gs.Node("Add", fresh_name(graph, f"{matmul.name or 'proj'}_bias"), inputs=[out, zeros],
                                   outputs=[biased]))
        added += 1
    if added:
        graph.toposort()
    return added


def branch_first_residuals(graph: Any) -> int:
    """A residual Add whose skip input comes from another Add (ViT's first block: its input is cls-token concat +
    position embedding) gets the branch (a projection's bias Add) as input 0. The attention fusion looks for the
    branch as the first Add parent of the residual it starts from, and stops at the skip's Add without trying
    the other input, so the first block stayed unfused. Add is commutative: the values are the same."""
    def projection(tensor: Any) -> bool:  # MatMul by a constant, then + bias
        add = tensor.inputs[0] if len(tensor.inputs) == 1 else None
        return add is not None and add.op == "Add" and any(
            len(t.inputs) == 1 and t.inputs[0].op == "MatMul" for t in add.inputs) and any(
            small_constant(t, 1 << 20) is not None for t in add.inputs)

    swapped = 0
    for add in [n for n in graph.nodes if n.op == "Add" and len(n.inputs) == 2]:
        skip, branch = add.inputs
        if not any(c.op in ("LayerNormalization", "SimplifiedLayerNormalization") for c in add.outputs[0].outputs):
            continue
        skip_from_add = len(skip.inputs) == 1 and skip.inputs[0].op == "Add"
        if skip_from_add and not projection(skip) and projection(branch):
            add.inputs[0], add.inputs[1] = branch, skip
            swapped += 1
    return swapped


def drop_softmax_nan_guards(graph: Any) -> int:
    """torch exports `scaled_dot_product_attention` with a safe softmax, Where(IsNaN(p), 0, p): it differs from the
    Softmax only on a query row whose every score is masked to -inf, which the guard turns from NaN into zeros.
    The fused Attention masks with a large finite negative instead, so no such row arises; the guard only hides
    the pattern. The agreement gate judges the fused engine against the strict-fp32 model on the same inputs."""
    dropped = 0
    for where in [n for n in graph.nodes if n.op == "Where" and len(n.inputs) == 3]:
        condition, zero, value = where.inputs
        if len(condition.inputs) != 1 or condition.inputs[0].op != "IsNaN" or len(value.inputs) != 1 \
                or value.inputs[0].op != "Softmax" or condition.inputs[0].inputs[0] is not value:
            continue
        constant = small_constant(zero, 1)
        if constant is None or constant.size != 1 or float(constant.reshape(())) != 0.0:
            continue
        dropped += bypass(graph, where, value)
    if dropped:
        graph.cleanup().toposort()
    return dropped


def _shape_items(tensor: Any) -> list | None:
    """A shape tensor (a Reshape's target) as a list of ints and ("dim", x, axis) items, where it is built from
    constants, Shape, Slice and Concat; None where it is built otherwise."""
    value = small_constant(tensor, 16)
    if value is not None:
        return [int(v) for v in value.reshape(-1)] if value.dtype.kind == "i" else None
    node = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    if node is None:
        return None
    if node.op == "Shape":
        source = node.inputs[0]
        if source.shape is None:
            return None
        dims = [("dim", source, axis) for axis in range(len(source.shape))]
        return dims[slice(node.attrs.get("start", 0), node.attrs.get("end"))]
    if node.op == "Concat" and node.attrs.get("axis") == 0:
        parts = [_shape_items(t) for t in node.inputs]
        return None if any(p is None for p in parts) else [item for part in parts for item in part]
    if node.op == "Slice" and 3 <= len(node.inputs) <= 5:
        data = _shape_items(node.inputs[0])
        bounds = [small_constant(t, 1) for t in node.inputs[1:]]
        if data is None or any(b is None or b.size != 1 for b in bounds) or \
                (len(bounds) >= 3 and int(bounds[2].reshape(())) != 0) or (len(bounds) == 4 and int(bounds[3].reshape(())) != 1):
            return None
        start, end = (max(min(int(b.reshape(())), len(data)), -len(data)) for b in bounds[:2])
        return data[start:end]
    return None


def key_transposes_as_one(graph: Any) -> int:
    """torch.export writes SDPA's kᵀ (k: [B, H, S, D]) as Reshape([-1, S, D]) -> Transpose(0, 2, 1) ->
    Reshape([B, H, D, S]): a transpose of the last two axes, which the fusion's key path (`Transpose -> Reshape ->
    Add -> MatMul`) does not see through. Where both Reshapes' targets provably merge and split back exactly those
    dims (built from `Shape(k)` and constants), the three become one Transpose (0, 1, 3, 2); exact."""

    rewritten = 0
    for last in [n for n in graph.nodes if n.op == "Reshape" and len(n.inputs) == 2]:
        swap = last.inputs[0].inputs[0] if len(last.inputs[0].inputs) == 1 else None
        if swap is None or swap.op != "Transpose" or list(swap.attrs.get("perm", [])) != [0, 2, 1]:
            continue
        first = swap.inputs[0].inputs[0] if len(swap.inputs[0].inputs) == 1 else None
        if first is None or first.op != "Reshape" or len(first.outputs[0].outputs) != 1 or len(swap.outputs[0].outputs) != 1:
            continue
        key = first.inputs[0]
        if key.shape is None or len(key.shape) != 4:
            continue

        def same(item: Any, axis: int) -> bool:
            return item == ("dim", key, axis) or (isinstance(item, int) and item == key.shape[axis])

        merged, split = _shape_items(first.inputs[1]), _shape_items(last.inputs[1])
        if merged is None or split is None or len(merged) != 3 or len(split) != 4:
            continue
        if not (merged[0] == -1 and same(merged[1], 2) and same(merged[2], 3)):
            continue
        if not ((same(split[0], 0) or split[0] == -1) and same(split[1], 1) and same(split[2], 3) and same(split[3], 2)):
            continue
        out = last.outputs[0]
        last.outputs.clear()
        graph.nodes.append(gs.Node("Transpose", fresh_name(graph, f"{last.name or 'key'}_transposed"),
                                   attrs={"perm": [0, 1, 3, 2]}, inputs=[key], outputs=[out]))
        rewritten += 1
    if rewritten:
        graph.cleanup().toposort()
    return rewritten


def drop_identity_reshapes(graph: Any) -> int:
    """A Reshape to [-1, d1, .., dn] of a tensor whose dims 1..n are d1..dn: the identity (torch.export writes one
    after SDPA's last MatMul; the fusion's output path does not pass through it). Exact."""
    dropped = 0
    for reshape in [n for n in graph.nodes if n.op == "Reshape" and len(n.inputs) == 2]:
        data, target = reshape.inputs[0], small_constant(reshape.inputs[1], 8)
        shape = data.shape
        if target is None or shape is None or len(shape) != target.size or target.size < 2 or int(target[0]) != -1:
            continue
        if all(isinstance(d, int) and d > 0 and d == int(t) for d, t in zip(shape[1:], target.reshape(-1)[1:])):
            dropped += bypass(graph, reshape, data)
    if dropped:
        graph.cleanup().toposort()
    return dropped


def drop_empty_masks(graph: Any) -> int:
    """transformers' models exported through torch.export (`dynamo=True`) add a mask to the scores where the model
    has none: Add(scores, Where(Expand(an all-true constant, shape), 0, -inf)). It adds zeros, so the scores pass
    unchanged; it only hides the mask-less attention pattern (`MatMul -> Div -> Softmax`) from the fusion."""
    dropped = 0
    for softmax in [n for n in graph.nodes if n.op == "Softmax"]:
        scores = softmax.inputs[0]
        add = scores.inputs[0] if len(scores.inputs) == 1 else None
        if add is None or add.op != "Add" or len(add.inputs) != 2:
            continue
        for i in (0, 1):
            mask, kept = add.inputs[i], add.inputs[1 - i]
            where = mask.inputs[0] if len(mask.inputs) == 1 else None
            if where is None or where.op != "Where" or len(where.inputs) != 3 or not kept.inputs:
                continue
            condition = where.inputs[0]
            if len(condition.inputs) == 1 and condition.inputs[0].op == "Expand":
                condition = condition.inputs[0].inputs[0]
            chosen, zero = small_constant(condition, 1 << 22), small_constant(where.inputs[1], 1)
            if chosen is None or chosen.dtype != bool or not chosen.all() or zero is None or zero.size != 1 \
                    or float(zero.reshape(())) != 0.0 or kept.inputs[0].op not in ("MatMul", "Mul", "Div"):
                continue
            dropped += bypass(graph, add, kept)
            break
    if dropped:
        graph.cleanup().toposort()
    return dropped


def fuse_for_gpu(src: Path, dst: Path, feed: dict | None = None) -> dict[str, Any]:
    """Rewrite `src` into the forms the fusions match, fuse with the graph's own parameters, save to `dst`.
    With a `feed` (a few calibration inputs), a fused graph is kept only where it computes what `src` computes
    (OutputCheck); the next model type's is tried, then the graph unfused. Returns what was done: the
    parameters, the rewrites, the fused operator counts per kind and the fusions rejected."""
    from onnxruntime.transformers.optimizer import optimize_model


    external = has_external_data(src)
    model = onnx.load(str(src), load_external_data=not external)
    done: dict[str, Any] = {}
    if not external:  # weights on disk stay there: nothing is split (a packed weight read whole would be a copy)
        try:
            model = _prepared(model, done)
        except Exception as exc:  # a graph the rewrites cannot take: the optimizer sees it as exported
            done = {"preparation_skipped": describe(exc)}
            model = onnx.load(str(src), load_external_data=True)
    params = transformer_params(model)
    check = OutputCheck(src, feed) if feed else None
    with tempfile.TemporaryDirectory(dir=dst.parent) as scratch:
        prepared = src if external else Path(scratch) / "prepared.onnx"
        if not external:
            onnx.save(model, str(prepared))
        tried, refused, rejected = [], {}, {}
        for model_type in _model_types(params["model_type"]):
            try:
                optimized = optimize_model(str(prepared), opt_level=0, use_gpu=True,
                                           **{**params, "model_type": model_type})
            except Exception as exc:  # a fusion that trips on this graph (seen: gpt2's on a raw torch.export GPT-2)
                refused[model_type] = describe(exc)
                continue
            counts = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
            score = (sum(n for op, n in counts.items() if op in ATTENTION_OPS), sum(counts.values()))
            tried.append((score, model_type, optimized, counts))

        def result(model_type: str | None, counts: dict) -> dict[str, Any]:
            return {**params, "model_type": model_type, **done, "fused_operators": counts,
                    **({"fusion_refused": refused} if refused else {}),
                    **({"fusion_rejected": rejected} if rejected else {}), **(check.summary() if check else {})}

        # the type whose fusions match the most attention first (the graph's own guess wins ties: a stable sort)
        for _, model_type, optimized, counts in sorted(tried, key=lambda t: t[0], reverse=True):
            optimized.save_model_to_file(str(dst), use_external_data_format=external)
            why = check.changed(dst) if check else None
            if why is None:
                return result(model_type, counts)
            rejected[model_type] = why
        # no model type's fusions could run, or none computed the graph: the engine is built from the prepared graph
        save_model(weights.load(prepared), dst, external=True if external else None)
        why = check.changed(dst) if check and not external else None
        if why is not None:  # a preparation rewrite that moved the outputs: the graph as it came
            rejected["prepared graph"] = why
            save_model(weights.load(src), dst, external=None)
        return result(None, {})


# How far a fused graph's outputs may lie from the exported graph's on the CPU provider, relative to each output's
# scale (its largest magnitude, at least 1). A fused kernel sums in another order: fp32 rounding, about 1e-6 here.
# A fusion that matched the wrong thing is off by the output's own size: onnxruntime's bert fusion of CLIP's causal
# text tower (transformers 5, TorchScript export, the mask built by Range/LessOrEqual/Where) drops the mask, 4.45 off.
FUSION_RTOL = 1e-3
CHECK_SAMPLES = 4


class OutputCheck:
    """The exported graph's outputs on a few inputs (CPU provider), against which each fused graph is run."""

    def __init__(self, src: Path, feed: dict):
        self.feed, self.reference, self.not_run = feed, None, None
        try:
            self.reference = _outputs(src, feed)
        except Exception as exc:  # inputs this graph cannot take: nothing is checked, and the report says why
            self.not_run = describe(exc)

    def changed(self, candidate: Path) -> str | None:
        """Why `candidate` does not compute what the exported graph does, or None where it does (or where it
        cannot run on the CPU provider: then the engine's own gates judge it)."""
        if self.reference is None:
            return None
        try:
            got = _outputs(candidate, self.feed)
        except Exception:  # an op without a CPU kernel
            return None
        for name, want in self.reference.items():
            scale = max(1.0, float(np.abs(want).max(initial=0.0)))
            drift = float(np.abs(got[name] - want).max(initial=0.0)) / scale
            if not np.isfinite(drift) or drift > FUSION_RTOL:
                return f"output {name} moved by {drift:.3g} of its scale (allowed {FUSION_RTOL:g})"
        return None

    def summary(self) -> dict:
        if self.not_run:
            return {"fusion_checked_on": f"not run: {self.not_run}"}
        samples = len(next(iter(self.feed.values())))
        return {"fusion_checked_on": f"{samples} calibration inputs, CPU provider, against the exported graph"}


def _outputs(path: Path, feed: dict) -> dict[str, np.ndarray]:
    """The numeric outputs in float64, where a difference is exact."""
    from compiler.backends.onnxruntime import cpu_outputs

    return {n: np.asarray(v, np.float64) for n, v in cpu_outputs(path, feed).items()
            if np.issubdtype(np.asarray(v).dtype, np.number)}


ATTENTION_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention", "PackedMultiHeadAttention")
MODEL_TYPES = ("bert", "gpt2", "clip")  # encoders (BERT, ViT), causal decoders, CLIP's text and vision towers


def _model_types(guess: str) -> list[str]:
    """The optimizer's model types to try, the graph's own guess first (it wins ties)."""
    return [guess] + [t for t in MODEL_TYPES if t != guess]


def _prepared(model: Any, done: dict) -> Any:
    """The graph in the forms the fusions match: packed q/k/v split, scales moved after q·kᵀ, safe-softmax guards
    dropped, sequence-first attention made batch-first, then cleaned, then zero biases restored and residual branches put first; `done` counts each rewrite."""
    from compiler.backends.attention_layout import batch_first_attention

    def split(graph: Any) -> None:
        done["packed_projections_split"] = split_packed_qkv.split(graph)

    def move(graph: Any) -> None:
        done["key_transposes_joined"] = key_transposes_as_one(graph)
        done["identity_reshapes_dropped"] = drop_identity_reshapes(graph)
        done["empty_masks_dropped"] = drop_empty_masks(graph)  # first: a scale on the scores shows after it
        done["attention_scales_moved"] = scale_after_qk.move(graph)
        done["softmax_nan_guards_dropped"] = drop_softmax_nan_guards(graph)
        done["attention_made_batch_first"] = batch_first_attention(graph)

    def biases(graph: Any) -> None:  # after eliminate_noops, which would take an Add of zeros out again
        done["zero_biases_added"] = add_zero_biases(graph)
        done["residual_inputs_swapped"] = branch_first_residuals(graph)

    model = on_graph(on_graph(model, split, infer=True), move)
    model = on_graph(merge_transposes_reshapes.apply(eliminate_noops.apply(model)), biases)
    return model
