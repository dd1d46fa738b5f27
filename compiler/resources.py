"""Where conf/ and recipes/ are: beside the package in a checkout or editable install,
inside it (compiler/_conf, compiler/_recipes) in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    for candidate in (_PACKAGE / f"_{name}", _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"compiler's '{name}' folder is missing from {_PACKAGE} and {_PACKAGE.parent}")


def conf_dir() -> Path:
    return resource_dir("conf")


def builtin_recipes_dir() -> Path:
    return resource_dir("recipes")
