"""The `_target_` allow-list: what a recipe may instantiate.

A recipe can only name classes and functions *defined* in modules under these prefixes; the list is widened
from the environment (COMPILER_ALLOWED_TARGETS, comma-separated prefixes), never from a recipe. The dotted
name is resolved the way Hydra resolves it (the longest importable module, then attributes), and judged by
what it resolves to: the module where the object is defined must be allowed, and no attribute on the way may
be a module reached through another module (`compiler.cache.os.makedirs` is `os.makedirs`, and is refused).
"""

from __future__ import annotations

import importlib
import os
import types
from typing import Any, Iterator, Mapping, Sequence

from compiler.errors import Problem, describe
from compiler.packages import install_line

DEFAULT_ALLOWED = ("compiler.", "torch.nn.", "torchvision.models.", "transformers.", "keras.", "tf_keras.",
                   "tensorflow.keras.")
ENV_VAR = "COMPILER_ALLOWED_TARGETS"
_WIDEN = f"add the defining module's prefix to {ENV_VAR} in the environment (a recipe cannot widen the allow-list)"


def allowed_prefixes() -> tuple[str, ...]:
    extra = [p.strip() for p in os.environ.get(ENV_VAR, "").split(",") if p.strip()]
    return DEFAULT_ALLOWED + tuple(extra)


def is_allowed(target: str) -> bool:
    """Is a dotted name under an allowed prefix (by its text alone; `target_problem` judges what it is)."""
    return isinstance(target, str) and any(target == p.rstrip(".") or target.startswith(p) for p in allowed_prefixes())


class TargetRefused(Exception):
    """A `_target_` that names something other than an allowed class or function."""

    def __init__(self, message: str, fix: str = _WIDEN, allowed: str = ""):
        super().__init__(message)
        self.fix, self.allowed = fix, allowed


def resolve(target: str) -> Any:
    """The object a dotted `_target_` names, or TargetRefused with why. Imports the target's module."""
    if not isinstance(target, str) or not target or any(not p.isidentifier() for p in target.split(".")):
        raise TargetRefused("not a dotted name of a class or function", fix="e.g. torch.nn.Sequential")
    if not is_allowed(target):
        raise TargetRefused("not on the allow-list", allowed=", ".join(allowed_prefixes()))
    parts = target.split(".")
    obj, depth = None, 0
    for depth in range(len(parts), 0, -1):
        name = ".".join(parts[:depth])
        try:
            obj = importlib.import_module(name)
            break
        except ModuleNotFoundError as exc:
            if exc.name and not name.startswith(exc.name) and not exc.name.startswith(name):
                raise TargetRefused(f"importing {name} needs '{exc.name}', which is not installed",
                                    fix=install_line(exc.name)) from None
    if obj is None:
        raise TargetRefused(f"its package '{parts[0]}' is not installed", fix=install_line(parts[0]))
    walked = ".".join(parts[:depth])
    for part in parts[depth:]:
        if not hasattr(obj, part):
            raise TargetRefused(f"{walked} has no attribute '{part}'", fix="check the spelling of the dotted name")
        obj = getattr(obj, part)
        walked = f"{walked}.{part}"
        if isinstance(obj, types.ModuleType) and obj.__name__ != walked:
            raise TargetRefused(f"{walked} is the module {obj.__name__}, reached through another module's attribute",
                                fix=f"name the object where it is defined, and {_WIDEN}")
    if isinstance(obj, types.ModuleType) or not callable(obj):
        raise TargetRefused("names a module or a value, not a class or function", fix="name a class or function")
    defined_in = getattr(obj, "__module__", None) or ""
    if not is_allowed(f"{defined_in}.") and not is_allowed(defined_in):
        raise TargetRefused(f"resolves to {defined_in or '?'}.{getattr(obj, '__qualname__', parts[-1])}, which is "
                            "defined outside the allow-list", allowed=", ".join(allowed_prefixes()))
    return obj


def target_problems(container: Any, key: str) -> list[Problem]:
    """Every `_target_` inside a config node, resolved and judged (imports each target's module)."""
    problems = []
    for path, target in targets_in(container, key):
        try:
            resolve(target)
        except TargetRefused as exc:
            problems.append(Problem(path, f"target refused: {exc}", target, exc.allowed or "classes and functions "
                                    f"defined under {', '.join(allowed_prefixes())}", fix=exc.fix))
        except Exception as exc:  # the target's module failed to import
            problems.append(Problem(path, f"importing the target failed: {describe(exc)}", target,
                                    "an importable class or function", fix="fix or install the target's module"))
    return problems


def targets_in(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every (key path, `_target_` value) inside a nested config node."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            sub = f"{path}.{key}"
            if key == "_target_":
                yield sub, value
            else:
                yield from targets_in(value, sub)
    elif isinstance(node, Sequence) and not isinstance(node, str):
        for i, value in enumerate(node):
            yield from targets_in(value, f"{path}[{i}]")
