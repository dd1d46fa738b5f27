"""Error types and exit codes shared by every stage.

Problems carry the key path, the bad value, what is allowed and a fix, so that the
CLI can print them all at once without a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_STAGE_FAILED = 1
EXIT_INVALID_RECIPE = 2
EXIT_VERIFY_FAILED = 3

_UNSET = object()
MAX_SHOWN = 200  # characters of a bad value a message repeats


def shown(value: Any) -> str:
    """A bad value as a message shows it: its repr, cut to MAX_SHOWN characters with the length said."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}... ({len(text)} characters)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, located by its key path."""

    path: str
    message: str
    value: Any = _UNSET
    allowed: str = ""
    fix: str = ""

    def __str__(self) -> str:
        parts = [f"{self.path}: {self.message}"]
        if self.value is not _UNSET:
            parts.append(f"got {shown(self.value)}")
        if self.allowed:
            parts.append(f"allowed: {self.allowed}")
        text = "; ".join(parts)
        return f"{text}. Fix: {self.fix}" if self.fix else text


class RecipeError(Exception):
    """The recipe is invalid; raised before any heavy work starts (exit 2)."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"the recipe is invalid ({n} problem{'s' if n != 1 else ''}); nothing was run:"
        return "\n".join([head] + [f"  - {p}" for p in self.problems])


class StageError(Exception):
    """A stage could not produce its artifact (exit 1)."""

    def __init__(self, stage: str, message: str, fix: str = ""):
        self.stage = stage
        self.fix = fix
        text = f"stage '{stage}' failed: {message}"
        super().__init__(f"{text}\n  Fix: {fix}" if fix else text)


class InputDomainError(StageError):
    """The generated inputs are outside what the model takes (a dim relation, an index bound, an enum value the
    recipe did not declare): the recipe must say the domain, so this exits 2 like any recipe problem."""


DEBUG_VAR = "COMPILER_DEBUG"
_HINTS = (", set env var HYDRA_FULL_ERROR=1 to see chained exception.", "Set the environment variable HYDRA_FULL_ERROR=1")


def debug_enabled() -> bool:
    """COMPILER_DEBUG=1 (or --verbose): full tracebacks instead of one-line messages."""
    return os.environ.get(DEBUG_VAR, "").lower() in ("1", "true", "yes")


def describe(exc: BaseException) -> str:
    """One line: the error and every cause chained under it (an import error inside a factory, say)."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = " ".join(str(exc).split())  # the whole message on one line (Hydra's are several sentences)
        for hint in _HINTS:
            text = text.replace(hint, "")
        parts.append(f"{type(exc).__name__}: {text.rstrip('.: ')}" if text else type(exc).__name__)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    tail = f" (set {DEBUG_VAR}=1 or pass --verbose for the traceback)" if not debug_enabled() else ""
    return " <- caused by ".join(parts) + tail
