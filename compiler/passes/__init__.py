"""The graph-surgery pass registry: every module of this package that declares a `PASS`.

A pass is a function `apply(model: onnx.ModelProto, **args) -> onnx.ModelProto` (or `Noted`, the model with
notes for the report) in its own module, which also declares its name, summary and arguments (`PASS`,
compiler/passes/args.py). The modules name onnx and numpy through compiler/heavy.py, so reading every declaration
costs no onnx import: a recipe's pass list is validated (names, argument values) on the lint path.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from compiler.errors import Problem
from compiler.passes.args import Arg, Noted, PassInfo
from compiler.security import target_problems

__all__ = ["Arg", "Noted", "PassCall", "PassInfo", "REGISTRY", "parse_pass_list"]


def _declared() -> dict[str, PassInfo]:
    """Each pass by name, from the modules that declare one (helpers such as _gs.py and shape_check.py do not)."""
    found = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        declared = getattr(importlib.import_module(f"{__name__}.{module.name}"), "PASS", None)
        if declared is not None:
            found[declared.name] = declared
    return found


REGISTRY: dict[str, PassInfo] = _declared()


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
