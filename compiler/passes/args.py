"""What a pass module declares about itself: its name, a one-line summary and its arguments (type, valid
values, default, help), all checked by lint without onnx.

A module of compiler/passes/ that sets `PASS = PassInfo(...)` is a pass, run by its `apply(model, **args)`. The
registry (`compiler.passes.REGISTRY`), lint and `python -m compiler list` read those declarations; nothing is
read back from a pass's source, and no list elsewhere names the passes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from compiler.errors import Problem

# what each kind accepts, in words (the `allowed` part of a message and of `list`)
_KINDS = {
    "int": "an integer", "bool": "true or false", "str": "a non-empty string",
    "names": "a non-empty list of tensor names", "renames": "a mapping of tensor name -> new name",
    "mapping": "a mapping of attribute name -> value",
}


@dataclass(frozen=True)
class Arg:
    """One pass argument: `kind` (int, bool, str, names, renames, mapping), its default, whether null is
    allowed, an inclusive integer range, and words that are allowed beside the kind (`dynamic`)."""

    kind: str
    default: Any = None
    optional: bool = False
    minimum: int | None = None
    maximum: int | None = None
    words: tuple[str, ...] = ()
    help: str = ""

    def allowed(self) -> str:
        text = _KINDS[self.kind]
        if self.kind == "int" and (self.minimum is not None or self.maximum is not None):
            low = "" if self.minimum is None else str(self.minimum)
            high = "" if self.maximum is None else str(self.maximum)
            text = f"an integer in {low}..{high}" if low and high else (
                f"an integer >= {low}" if low else f"an integer <= {high}")
        parts = [text, *(repr(w) for w in self.words)] + (["null"] if self.optional else [])
        return " or ".join(parts)

    def problems(self, value: Any, path: str) -> list[Problem]:
        if value is None and self.optional:
            return []
        if value is None and self.default is None:
            return [Problem(path, "missing required pass argument", None, self.allowed(),
                            fix=f"add it: {path.rsplit('.', 1)[-1]}: <{self.allowed()}>")]
        if isinstance(value, str) and value in self.words:
            return []
        if not self._fits(value):
            return [Problem(path, "not an allowed value for this pass argument", value, self.allowed(),
                            fix=f"set it to {self.allowed()}" + (f" (default: {self.default!r})"
                                                                 if self.default is not None else ""))]
        return []

    def _fits(self, value: Any) -> bool:
        if self.kind == "int":
            return (isinstance(value, int) and not isinstance(value, bool)
                    and (self.minimum is None or value >= self.minimum)
                    and (self.maximum is None or value <= self.maximum))
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str) and bool(value.strip())
        if self.kind == "names":
            return (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
                    and all(isinstance(v, str) and v for v in value))
        if self.kind == "renames":
            return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) and k and v
                                                   for k, v in value.items())
        if self.kind == "mapping":
            return isinstance(value, dict) and all(isinstance(k, str) for k in value)
        raise ValueError(f"unknown argument kind {self.kind!r}")

    def bad_example(self) -> Any:
        """A value this argument refuses (the tests go over every pass with one)."""
        if self.kind == "int":
            return (self.minimum - 1) if self.minimum is not None else (self.maximum + 1 if self.maximum is not None
                                                                         else "three")
        return {"bool": 3, "str": 3 if "" in self.words else "", "names": [], "renames": {"a": 1},
                "mapping": [1]}[self.kind]


@dataclass(frozen=True)
class PassInfo:
    """A pass's declaration, in its own module (`compiler.passes.<name>`, whose `apply` runs it)."""

    name: str
    summary: str
    args: Mapping[str, Arg] = field(default_factory=dict)   # declared arguments: kind, default, range

    def defaults(self) -> dict[str, Any]:
        return {name: arg.default for name, arg in self.args.items()}

    def load(self) -> Callable[..., Any]:
        return importlib.import_module(f"compiler.passes.{self.name}").apply


@dataclass(frozen=True)
class Noted:
    """A pass's result with what the report should say about it (a pass returns this instead of the bare model
    when it has something to say: fold_constants naming the nodes it left unfolded)."""

    model: Any
    notes: tuple[str, ...] = ()
