"""Named dims and the relations between them: `dims: {past: [0, 16, 128], seq: [1, 1, 16], total: past + seq}`.

A dim is `[min, opt, max]`, or an expression over other dims (`+ - * //`, integers, parentheses) evaluated at
each position: min from the mins, opt from the opts, max from the maxes. So every shape that derives from the
IO spec (verification, latency, calibration, TensorRT profiles and reproducers) keeps `total = past + seq`.
A range may start at 0 (an empty KV cache); a batch dim may not.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Mapping

from compiler.errors import Problem

Range = tuple[int, int, int]
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.FloorDiv: lambda a, b: a // b}


def is_expression(value: Any) -> bool:
    return isinstance(value, str)


def names_in(expression: str) -> list[str]:
    """The dim names an expression reads (raises SyntaxError/ValueError on anything but the allowed grammar)."""
    tree = ast.parse(expression, mode="eval")
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.append(node.id)
        elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.Load, ast.Constant,
                                   *_OPS)):
            raise ValueError(f"'{type(node).__name__}' is not allowed (dims combine with + - * // and integers)")
        elif isinstance(node, ast.Constant) and not isinstance(node.value, int):
            raise ValueError(f"{node.value!r} is not an integer")
    return names


def evaluate(expression: str, values: Mapping[str, int]) -> int:
    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            return int(node.value)
        if isinstance(node, ast.Name):
            return int(values[node.id])
        if isinstance(node, ast.UnaryOp):
            return -walk(node.operand)
        return _OPS[type(node.op)](walk(node.left), walk(node.right))
    return walk(ast.parse(expression, mode="eval"))


def order(dims: Mapping[str, Any]) -> list[str]:
    """The expression dims in an order where each follows the dims it reads (ValueError on a cycle)."""
    exprs = {k: names_in(v) for k, v in dims.items() if is_expression(v)}
    done: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in done or name not in exprs:
            return
        if name in visiting:
            raise ValueError(" -> ".join(visiting[visiting.index(name):] + [name]))
        visiting.append(name)
        for dep in exprs[name]:
            visit(dep)
        visiting.pop()
        done.append(name)

    for name in exprs:
        visit(name)
    return done


def resolve(dims: Mapping[str, Any]) -> dict[str, Range]:
    """Every dim as (min, opt, max): ranges as given, expressions evaluated position by position."""
    out: dict[str, Range] = {k: tuple(int(v) for v in r) for k, r in dims.items() if not is_expression(r)}
    for name in order(dims):
        out[name] = tuple(evaluate(dims[name], {k: v[i] for k, v in out.items()}) for i in range(3))
    return out


def problems(dims: Mapping[str, Any], batch_dims: set[str]) -> list[Problem]:
    """Every problem of `model.dims`: bad ranges, expressions naming unknown dims, cycles, bad results."""
    found = []
    for name, value in dims.items():
        path = f"model.dims.{name}"
        if is_expression(value):
            try:
                unknown = [n for n in names_in(value) if n not in dims]
            except (SyntaxError, ValueError) as exc:
                found.append(Problem(path, f"not a dim expression ({exc})", value,
                                     "dim names and integers with + - * // and parentheses", fix="e.g. model.dims.total='past + seq'"))
                continue
            if unknown:
                found.append(Problem(path, f"the expression names {', '.join(repr(n) for n in unknown)}, which "
                                     "model.dims does not declare", value, ", ".join(sorted(dims)),
                                     fix=f"declare it: model.dims.{unknown[0]}=[min,opt,max]"))
            continue
        found += range_problems(path, value, allow_zero=name not in batch_dims)
    if found:
        return found
    try:
        order(dims)
    except ValueError as exc:
        return [Problem("model.dims", f"the dim expressions form a cycle ({exc})", str(exc), "expressions that do not read "
                        "themselves", fix="give one of them a "
                        "[min,opt,max] range")]
    resolved = resolve(dims)
    for name in order(dims):
        low, opt, high = resolved[name]
        if not 0 <= low <= opt <= high:
            found.append(Problem(f"model.dims.{name}", f"evaluates to [{low}, {opt}, {high}], which is not "
                                 "0 <= min <= opt <= max", dims[name], "an expression that gives 0 <= min <= opt <= max",
                                 fix="check the ranges it reads"))
    return found


def range_problems(path: str, r: Any, allow_zero: bool = True) -> list[Problem]:
    if not isinstance(r, (list, tuple)) or len(r) != 3 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                  for v in r):
        return [Problem(path, "needs [min, opt, max] integers, or an expression of other dims", r,
                        "[min, opt, max] integers, or e.g. 'past + seq'", fix=f"e.g. {path}=[1,8,32]")]
    floor = 0 if allow_zero else 1
    if not floor <= r[0] <= r[1] <= r[2]:
        return [Problem(path, f"needs {floor} <= min <= opt <= max", list(r), f"[min, opt, max] with {floor} <= min <= opt <= max",
                        fix=f"e.g. {path}=[{max(floor, min(r))},{sorted(r)[1]},{max(r)}]")]
    return []


# --- the names of an ONNX file's dynamic dims -----------------------------------------------

def static_size(d: Any) -> int | None:
    """A dim's fixed size, 0 included (an empty tensor is a real size), or None for a dynamic one."""
    return int(d.dim_value) if d.HasField("dim_value") and d.dim_value >= 0 else None


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def dim_keys(graph_inputs: list) -> dict[tuple[str, int], str]:
    """The recipe's name for each dynamic dim of the inputs, by (input, axis): the file's own name where a command
    line can address it (`++model.dims.NAME=...`); else that name with every run of other characters as `_`
    (paddle2onnx's `p2o.DynamicDimension.0` is `p2o_DynamicDimension_0`: Hydra reads dots as nesting), made unique;
    a dim with no name, or a name of no letters or digits (`?`), is `INPUT_dimAXIS`, a dim of its own."""
    dynamic = [(value.name, axis, d.dim_param) for value in graph_inputs if value.type.tensor_type.HasField("shape")
               for axis, d in enumerate(value.type.tensor_type.shape.dim)
               if static_size(d) is None]
    named = {param for _, _, param in dynamic if _KEY.fullmatch(param)}
    taken = {param: param for param in named}  # key -> the file's name it stands for ("" for a dim of its own)
    keys: dict[tuple[str, int], str] = {}
    for name, axis, param in dynamic:
        if param in named:
            keys[(name, axis)] = param
            continue
        original = param if re.search(r"[A-Za-z0-9]", param) else ""
        key = base = _as_key(original or f"{name}_dim{axis}")
        n = 1
        while key in taken and not (original and taken[key] == original):  # one name in the file is one dim
            n += 1
            key = f"{base}_{n}"
        taken[key] = original
        keys[(name, axis)] = key
    return keys


def _as_key(name: str) -> str:
    key = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")
    return key if _KEY.fullmatch(key) else f"d_{key}"
