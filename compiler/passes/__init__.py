"""The graph-surgery pass registry.

A pass is a function `apply(model: onnx.ModelProto, **args) -> onnx.ModelProto` (or `Noted`, the model with
notes for the report) in its own module; the registry holds each pass's name, import path and declared arguments (compiler/passes/args.py),
so a recipe's pass list is validated (names, argument values) without importing onnx.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from compiler.errors import Problem
from compiler.passes.args import Arg
from compiler.security import target_problems


MAX_OPSET = 23   # the newest opset onnx's version converter and onnxruntime take; 7 is the converter's oldest


@dataclass(frozen=True)
class Noted:
    """A pass's result with what the report should say about it (a pass returns this instead of the bare model
    when it has something to say: fold_constants naming the nodes it left unfolded)."""

    model: Any
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PassInfo:
    name: str
    runner: str                                   # "module:function"
    summary: str
    args: Mapping[str, Arg] = field(default_factory=dict)   # declared arguments: kind, default, range

    def defaults(self) -> dict[str, Any]:
        return {name: arg.default for name, arg in self.args.items()}

    def load(self) -> Callable[..., Any]:
        module, _, func = self.runner.partition(":")
        return getattr(importlib.import_module(module), func)


def _info(pass_name: str, summary: str, **args: Arg) -> PassInfo:
    return PassInfo(pass_name, f"compiler.passes.{pass_name}:apply", summary, args)


_DIM_SIZE = Arg("int", "dynamic", minimum=1, words=("dynamic",), help="a static size, or dynamic")
_NAME = Arg("str", "batch", help="the dim's name")

REGISTRY: dict[str, PassInfo] = {p.name: p for p in [
    _info("fold_constants", "evaluate constant subgraphs (and static shape computations) into initializers",
          fold_shapes=Arg("bool", True, help="fold Shape ops of static dims too"),
          size_threshold=Arg("int", None, optional=True, minimum=0,
                             help="leave folded constants above this many bytes as computations")),
    _info("cleanup", "remove dead nodes and unused initializers (unused graph inputs with remove_unused_inputs)",
          remove_unused_inputs=Arg("bool", False)),
    _info("toposort", "sort nodes topologically"),
    _info("infer_shapes", "annotate every tensor with its inferred shape and type"),
    _info("eliminate_noops", "remove Identity, inference Dropout, same-type Cast, same-shape Reshape/Flatten/Expand/"
          "Squeeze/Unsqueeze, identity Transpose, zero Pad, Mul/Div by 1, Add/Sub of 0, one-input Concat"),
    _info("merge_transposes_reshapes", "merge consecutive Transposes (dropping identities), a Reshape after any "
          "reshape-like op, Concats of Concats on one axis, and Slices of Slices on other axes"),
    _info("fuse_batchnorm", "fold inference BatchNormalization into the Conv/ConvTranspose/Gemm/MatMul before it"),
    _info("fold_mul_add", "fold constant Mul/Add after Conv/Gemm into weights and bias; MatMul + Add into Gemm"),
    _info("fold_transpose_into_gemm", "fold Transpose -> flatten Reshape -> Gemm/MatMul into permuted weights"),
    _info("fuse_pad_into_conv", "fold a zero constant Pad on spatial axes into the next Conv's pads"),
    _info("dedup_constants", "share identical initializers and constants"),
    _info("fuse_parallel_matmuls", "fuse MatMuls that read one input with constant weights of one depth (Q/K/V "
          "projections) into one MatMul and a Split"),
    _info("split_packed_qkv", "split a packed q/k/v projection (timm, GPT-2, nn.MultiheadAttention, "
          "fuse_parallel_matmuls) into three, the form onnxruntime's attention fusion matches (GPU engines do this)"),
    _info("scale_after_qk", "move attention's scale from q and k to the scores (MatMul -> Div -> Softmax), the form "
          "onnxruntime's attention fusion matches (GPU engines do this)"),
    _info("merge_duplicate_nodes", "merge nodes with the same op, attributes and inputs (common subexpressions)"),
    _info("fold_shape_computations", "evaluate Shape->Gather/Slice->Concat->... subgraphs with symbolic dims: "
          "constants where fully known, 0/-1 in Reshape targets"),
    _info("simplify_reshape", "replace shape-computation subgraphs feeding Reshape with a constant shape"),
    PassInfo("set_batch", "compiler.passes.set_dim:apply_batch", "make dim 0 of inputs/outputs static (size: N) or "
             "dynamic (size: dynamic)", {"size": _DIM_SIZE, "name": _NAME}),
    _info("set_dim", "make named dims (or dims at `index`) static or dynamic", name=_NAME, size=_DIM_SIZE,
          index=Arg("int", None, optional=True, minimum=0, help="the axis, instead of the name")),
    _info("rename_io", "rename graph inputs/outputs", inputs=Arg("renames", None, optional=True),
          outputs=Arg("renames", None, optional=True)),
    _info("append_postprocess", "append Softmax/ArgMax outputs after an output",
          output=Arg("str", None, optional=True, help="the output to read (default: the first)"),
          softmax=Arg("str", "probabilities", optional=True), argmax=Arg("str", "labels", optional=True),
          axis=Arg("int", -1, minimum=-32, maximum=31), keep_input=Arg("bool", True)),
    _info("extract_subgraph", "keep only the subgraph between tensor names",
          inputs=Arg("names", None, optional=True), outputs=Arg("names", None, optional=True)),
    _info("replace_with_plugin", "replace the subgraph between tensor names with one custom op (TensorRT plugin)",
          op=Arg("str"), inputs=Arg("names"), outputs=Arg("names"), domain=Arg("str", "", words=("",)),
          attrs=Arg("mapping", None, optional=True), name=Arg("str", None, optional=True)),
    _info("convert_opset", "convert to another opset",
          version=Arg("int", 17, minimum=7, maximum=MAX_OPSET, help="the target opset")),
    _info("strip_doc_strings", "remove doc strings (exporter stack traces)"),
]}


@dataclass(frozen=True)
class PassCall:
    """One entry of a recipe's pass list, resolved: what to run and with which arguments."""

    index: int
    name: str
    args: Mapping[str, Any]
    info: PassInfo | None = None     # None for an allow-listed `_target_`
    target: str | None = None

    def load(self) -> Callable[..., Any]:
        if self.info is not None:
            return self.info.load()
        module, _, func = self.target.rpartition(".")
        return getattr(importlib.import_module(module), func)


def parse_pass_list(raw_passes: Sequence[Any], key: str = "surgery.passes") -> tuple[list[PassCall], list[Problem]]:
    """Resolve `surgery.passes`: a name, `{name: {args}}` or `{_target_: dotted.fn, **args}` each."""
    calls, problems = [], []
    for index, entry in enumerate(raw_passes):
        path = f"{key}[{index}]"
        if isinstance(entry, str):
            name, args = entry, {}
        elif isinstance(entry, Mapping) and "_target_" in entry:
            target = entry["_target_"]
            refused = target_problems({"_target_": target}, path)
            if refused:
                problems += refused
            else:
                calls.append(PassCall(index, target, {k: v for k, v in entry.items() if k != "_target_"}, target=target))
            continue
        elif isinstance(entry, Mapping) and len(entry) == 1:
            (name, args), = entry.items()
            args = args or {}
        else:
            problems.append(Problem(path, "a pass is a name, {name: {args}} or {_target_: ...}", entry,
                                    "NAME, {NAME: {args}} or {_target_: dotted.fn, **args}",
                                    fix="e.g. fold_constants, or {set_batch: {size: 1}}"))
            continue
        info = REGISTRY.get(name)
        if info is None:
            import difflib

            close = difflib.get_close_matches(str(name), list(REGISTRY), n=1)
            problems.append(Problem(path, "unknown pass", name, ", ".join(REGISTRY),
                                    fix=f"did you mean '{close[0]}'?" if close else "pick a registered pass"))
            continue
        if not isinstance(args, Mapping):
            problems.append(Problem(f"{path}.{name}", "pass arguments must be a mapping", args, "{arg: value}",
                                    fix=f"write {{{name}: {{arg: value}}}}"))
            continue
        unknown = [a for a in args if a not in info.args]
        for a in unknown:
            problems.append(Problem(f"{path}.{name}.{a}", "unknown pass argument", a, ", ".join(info.args) or "none",
                                    fix=f"remove it (`python -m compiler list` shows {name}'s arguments)"))
        given = {**info.defaults(), **args}
        bad = [p for a, declared in info.args.items() for p in declared.problems(given[a], f"{path}.{name}.{a}")]
        problems += bad
        if not unknown and not bad:
            calls.append(PassCall(index, name, given, info=info))
    return calls, problems
