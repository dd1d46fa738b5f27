"""What a recipe's path imports that may not be installed, and the line that installs it."""

from __future__ import annotations

# how to install what a recipe's path imports: the checkout form first, then the installed-package form
INSTALL = {"tensorflow": '-e ".[tensorflow]"', "tf2onnx": '-e ".[tensorflow]"', "keras": '-e ".[tensorflow]"',
           "transformers": '-e ".[transformers]"', "modelopt": '-e ".[modelopt]"', "mlflow": '-e ".[tracking]"',
           "tensorboard": '-e ".[tracking]"', "onnxscript": '-e .', "torchvision": "torchvision (a build matching "
           "your torch)", "timm": "timm",
           "tritonclient": '-e ".[serve]"', "pytriton": '-e ".[serve]"'}


def install_line(package: str) -> str:
    how = INSTALL.get(package, package)
    extra = how.split("[", 1)[1].split("]", 1)[0] if "[" in how else None
    installed = f" (an installed compiler: pip install 'compiler[{extra}]')" if extra else ""
    return f"pip install {how}{installed}"


def missing_package_of(target: str) -> str | None:
    """The top-level package of a `_target_` when it is not importable here."""
    import importlib.util

    top = target.split(".", 1)[0]
    try:
        return None if importlib.util.find_spec(top) is not None else top
    except (ImportError, ValueError):
        return top
