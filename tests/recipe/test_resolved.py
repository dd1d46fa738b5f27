"""The recipe is resolved once and frozen: every edit of a composed config lives in compiler/recipe/edits.py,
and what the compile takes is read-only, with the run's one IOSpec and EnginePlan."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from omegaconf.errors import ReadonlyConfigError

from compiler.cli import check_recipe
from tests.conftest import recipe_cfg

PACKAGE = Path(__file__).resolve().parents[2] / "compiler"


def test_a_checked_recipe_is_read_only_and_carries_its_io_and_plan():
    checked = check_recipe(recipe_cfg("cnn_torch"), "cnn_torch")
    assert checked.code is None
    resolved = checked.resolved
    assert resolved.io.input_names == [spec.name for spec in resolved.cfg.model.inputs]
    assert resolved.plan.precision == resolved.cfg.engine.precision.value
    with pytest.raises(ReadonlyConfigError):
        resolved.cfg.model.dims.batch = [1, 1, 1]
    with pytest.raises(ReadonlyConfigError):
        resolved.cfg.train.epochs = 1


def _matmul_file(folder: Path) -> Path:
    """x[n, 6] @ w -> y[n, 2]: a file whose IO the recipe leaves to the file."""
    w = numpy_helper.from_array(np.ones((6, 2), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])], [w])
    path = folder / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_an_onnx_recipe_is_resolved_from_its_file_before_it_freezes(tmp_path):
    path = _matmul_file(tmp_path)
    checked = check_recipe(recipe_cfg("onnx_file", f"model.path={path}"), "onnx_file")
    resolved = checked.resolved
    assert [spec.name for spec in resolved.cfg.model.inputs] == ["x"]
    assert [o.name for o in resolved.cfg.model.outputs] == ["y"]
    assert resolved.io.input_names == ["x"] and resolved.io.output_names == ["y"]
    with pytest.raises(ReadonlyConfigError):
        resolved.cfg.model.inputs = []


def _writes_to_a_recipe(tree: ast.AST) -> list[int]:
    """Lines that assign into `cfg.<section>...` (an attribute or item of a config named cfg)."""
    lines = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            root = target
            while isinstance(root, (ast.Attribute, ast.Subscript)):
                root = root.value
            if isinstance(root, ast.Name) and root.id == "cfg" and target is not root:
                lines.append(node.lineno)
    return lines


def test_nothing_outside_compiler_recipe_writes_into_a_recipe():
    found = {str(path.relative_to(PACKAGE)): lines for path in sorted(PACKAGE.rglob("*.py"))
             if "recipe" not in path.relative_to(PACKAGE).parts
             and (lines := _writes_to_a_recipe(ast.parse(path.read_text())))}
    assert found == {}
    assert _writes_to_a_recipe(ast.parse((PACKAGE / "recipe" / "edits.py").read_text()))  # the check sees writes


def _from_cfg_calls(monkeypatch) -> list[int]:
    from compiler.iospec import IOSpec

    calls, real = [], IOSpec.from_cfg.__func__

    def counted(cls, cfg):
        calls.append(1)
        return real(cls, cfg)

    monkeypatch.setattr(IOSpec, "from_cfg", classmethod(counted))
    return calls


@pytest.mark.parametrize("recipe", ["cnn_torch", "bert_torch"])
def test_the_io_spec_is_built_once_per_run(monkeypatch, recipe):
    calls = _from_cfg_calls(monkeypatch)
    checked = check_recipe(recipe_cfg(recipe, "serve.target=triton"), recipe)  # serve's IO checks read it too
    assert checked.code is None and len(calls) == 1


def test_an_onnx_file_that_takes_its_generated_inputs_builds_its_io_spec_once(monkeypatch, tmp_path):
    path = _matmul_file(tmp_path)
    calls = _from_cfg_calls(monkeypatch)
    checked = check_recipe(recipe_cfg("onnx_file", f"model.path={path}", "cache.enabled=false"), "onnx_file")
    assert checked.code is None and len(calls) == 1


def test_only_the_resolved_recipe_and_the_probes_candidates_build_an_io_spec():
    """The run's IOSpec comes from `freeze`; the input-domain probe builds one per candidate recipe it tries, and
    the sweep summary one per finished job's recorded recipe. Every other reader takes `Resolved.io`."""
    found = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                   if "IOSpec.from_cfg(" in path.read_text())
    assert found == ["input_domain.py", "recipe/resolved.py", "sweep_timing.py"]
