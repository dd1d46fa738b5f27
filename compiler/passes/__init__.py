"""The graph-surgery pass registry.

A pass is a function `apply(model: onnx.ModelProto, **args) -> onnx.ModelProto` in its own
module. The registry holds each pass's name, import path and arguments, so a recipe's pass
list is validated (names, arguments) without importing onnx.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from compiler.errors import Problem
from compiler.security import allowed_prefixes, is_allowed


@dataclass(frozen=True)
class PassInfo:
    name: str
    runner: str                                   # "module:function"
    summary: str
    args: Mapping[str, Any] = field(default_factory=dict)   # allowed arguments and their defaults

    def load(self) -> Callable[..., Any]:
        module, _, func = self.runner.partition(":")
        return getattr(importlib.import_module(module), func)


def _info(pass_name: str, summary: str, **args: Any) -> PassInfo:
    return PassInfo(pass_name, f"compiler.passes.{pass_name}:apply", summary, args)


REGISTRY: dict[str, PassInfo] = {p.name: p for p in [
    _info("fold_constants", "evaluate constant subgraphs (and static shape computations) into initializers",
          fold_shapes=True, size_threshold=None),
    _info("cleanup", "remove dead nodes and unused initializers (unused graph inputs with remove_unused_inputs)",
          remove_unused_inputs=False),
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
    _info("merge_duplicate_nodes", "merge nodes with the same op, attributes and inputs (common subexpressions)"),
    _info("fold_shape_computations", "evaluate Shape->Gather/Slice->Concat->... subgraphs with symbolic dims: "
          "constants where fully known, 0/-1 in Reshape targets"),
    _info("simplify_reshape", "replace shape-computation subgraphs feeding Reshape with a constant shape"),
    PassInfo("set_batch", "compiler.passes.set_dim:apply_batch", "make dim 0 of inputs/outputs static (size: N) or "
             "dynamic (size: dynamic)", {"size": "dynamic", "name": "batch"}),
    _info("set_dim", "make named dims (or dims at `index`) static or dynamic", name="batch", size="dynamic", index=None),
    _info("rename_io", "rename graph inputs/outputs", inputs=None, outputs=None),
    _info("append_postprocess", "append Softmax/ArgMax outputs after an output", output=None,
          softmax="probabilities", argmax="labels", axis=-1, keep_input=True),
    _info("extract_subgraph", "keep only the subgraph between tensor names", inputs=None, outputs=None),
    _info("replace_with_plugin", "replace the subgraph between tensor names with one custom op (TensorRT plugin)",
          op=None, inputs=None, outputs=None, domain="", attrs=None, name=None),
    _info("convert_opset", "convert to another opset", version=17),
    _info("strip_doc_strings", "remove doc strings (exporter stack traces)"),
]}
REQUIRED_ARGS = {"replace_with_plugin": ("op", "inputs", "outputs")}


def arg_annotations(runner: str) -> dict[str, str]:
    """A pass function's argument annotations, read from its source with `ast`: lint checks argument types
    against the signature without importing onnx."""
    import ast
    import importlib.util

    module, _, func = runner.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return {}
    tree = ast.parse(open(spec.origin).read())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == func:
            return {a.arg: ast.unparse(a.annotation) for a in node.args.args + node.args.kwonlyargs if a.annotation}
    return {}


_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str, "list": list, "dict": dict}


def value_matches(value: Any, annotation: str) -> bool:
    """Does a recipe value fit a simple annotation (int | None, list | None, Literal['dynamic'] | int, ...)?"""
    import ast

    def fits(node: ast.AST) -> bool:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return fits(node.left) or fits(node.right)
        if isinstance(node, ast.Constant) and node.value is None:
            return value is None
        if isinstance(node, ast.Subscript):
            base = ast.unparse(node.value)
            if base.endswith("Literal"):
                items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
                return any(isinstance(i, ast.Constant) and i.value == value for i in items)
            if base.endswith("Optional"):
                return value is None or fits(node.slice)
            return fits(node.value)
        name = ast.unparse(node).rsplit(".", 1)[-1]
        if name not in _TYPES:
            return True  # a type lint cannot judge: the pass will
        if isinstance(value, bool) and name != "bool":
            return False
        return isinstance(value, _TYPES[name])

    return fits(ast.parse(annotation, mode="eval").body)


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
            if not is_allowed(target):
                problems.append(Problem(f"{path}._target_", "custom pass is not on the allow-list", target,
                                        ", ".join(allowed_prefixes()),
                                        fix="add its prefix to COMPILER_ALLOWED_TARGETS in the environment"))
            else:
                calls.append(PassCall(index, target, {k: v for k, v in entry.items() if k != "_target_"}, target=target))
            continue
        elif isinstance(entry, Mapping) and len(entry) == 1:
            (name, args), = entry.items()
            args = args or {}
        else:
            problems.append(Problem(path, "a pass is a name, {name: {args}} or {_target_: ...}", entry))
            continue
        info = REGISTRY.get(name)
        if info is None:
            import difflib

            close = difflib.get_close_matches(str(name), list(REGISTRY), n=1)
            problems.append(Problem(path, "unknown pass", name, ", ".join(REGISTRY),
                                    fix=f"did you mean '{close[0]}'?" if close else "pick a registered pass"))
            continue
        if not isinstance(args, Mapping):
            problems.append(Problem(f"{path}.{name}", "pass arguments must be a mapping", args))
            continue
        unknown = [a for a in args if a not in info.args]
        for a in unknown:
            problems.append(Problem(f"{path}.{name}.{a}", "unknown pass argument", allowed=", ".join(info.args) or "none"))
        annotations = arg_annotations(info.runner)
        for a, value in args.items():
            hint = annotations.get(a)
            if a in info.args and hint and not value_matches(value, hint):
                problems.append(Problem(f"{path}.{name}.{a}", f"expected {hint}", value))
        for a in REQUIRED_ARGS.get(name, ()):
            if args.get(a) is None:
                problems.append(Problem(f"{path}.{name}.{a}", "missing required pass argument"))
        if not unknown:
            calls.append(PassCall(index, name, {**info.args, **args}, info=info))
    return calls, problems
