"""The heavy libraries, named once and imported on first use.

A module names them at its top (`from compiler.heavy import np, onnx, gs`) and stays cheap to import. The lint
path (a recipe's checks, every pass's declaration, `python -m compiler list`) imports the pass modules and
never calls them, so it does not pay the ~0.4 s that onnx, numpy and onnx-graphsurgeon take to import. The first
attribute read imports the real module; reads after that find its attributes on the stand-in directly.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """A stand-in for the module `name`, imported when an attribute is first read."""

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # later reads skip __getattr__; a submodule imported later still resolves
        return getattr(module, attr)


np = LazyModule("numpy")
onnx = LazyModule("onnx")                 # with it: helper, numpy_helper, utils, version_converter, shape_inference
gs = LazyModule("onnx_graphsurgeon")
