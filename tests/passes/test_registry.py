"""Passes declare themselves: the registry is what the pass modules declare, read without importing onnx."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import compiler.passes
from compiler.passes import REGISTRY


def test_every_pass_module_declares_itself_by_its_module_name():
    declaring = {}
    for module in pkgutil.iter_modules(compiler.passes.__path__):
        declared = getattr(importlib.import_module(f"compiler.passes.{module.name}"), "PASS", None)
        if declared is not None:
            declaring[module.name] = declared.name
    assert declaring == {name: name for name in REGISTRY}
    assert {"shape_check", "_gs", "args"}.isdisjoint(REGISTRY)  # helpers are not passes


def test_each_declaration_names_the_arguments_and_defaults_of_its_apply():
    for name, info in REGISTRY.items():
        parameters = list(inspect.signature(info.load()).parameters.values())[1:]  # after the model
        defaults = {p.name: None if p.default is p.empty else p.default for p in parameters}  # None: required
        assert defaults == info.defaults(), name


def test_reading_every_declaration_imports_no_heavy_library():
    code = ("import sys; from compiler.passes import REGISTRY; "
            "print(len(REGISTRY), sorted(m for m in ('onnx', 'numpy', 'onnx_graphsurgeon', 'onnxruntime') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == [str(len(REGISTRY)), "[]"], out.stderr
