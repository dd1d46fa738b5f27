"""The `_target_` allow-list: what a recipe may instantiate.

A recipe can only name callables under these prefixes; the list is widened from the
environment (COMPILER_ALLOWED_TARGETS, comma-separated prefixes), never from a recipe.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Sequence

DEFAULT_ALLOWED = ("compiler.", "torch.nn.", "torchvision.models.", "transformers.", "keras.", "tf_keras.",
                   "tensorflow.keras.")
ENV_VAR = "COMPILER_ALLOWED_TARGETS"


def allowed_prefixes() -> tuple[str, ...]:
    extra = [p.strip() for p in os.environ.get(ENV_VAR, "").split(",") if p.strip()]
    return DEFAULT_ALLOWED + tuple(extra)


def is_allowed(target: str) -> bool:
    return isinstance(target, str) and any(target == p.rstrip(".") or target.startswith(p) for p in allowed_prefixes())


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
