"""Every exit-2 message names the key path, the bad value (cut to 200 characters), what is allowed and a fix; no
input gives a traceback, and a refused run writes nothing. The bad inputs themselves are in test_lint.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from compiler.errors import Problem
from tests.conftest import REPO


def _problem_calls():
    for path in sorted((REPO / "compiler").rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name == "Problem" or (name == "add" and isinstance(f, ast.Attribute) and ast.unparse(f.value) == "c"):
                yield path.relative_to(REPO), node


def test_every_problem_the_code_can_raise_has_all_four_parts():
    """Every place that words a problem gives the bad value, what is allowed and a fix (the key path is the first
    argument), so no message can lose a part."""
    missing = []
    for where, node in _problem_calls():
        given = {k.arg for k in node.keywords} | {("path", "message", "value", "allowed", "fix")[i]
                                                   for i in range(len(node.args))}
        lacking = {"path", "value", "allowed", "fix"} - given
        if lacking:
            missing.append(f"{where}:{node.lineno} lacks {sorted(lacking)}")
    assert not missing, "\n".join(missing)
    assert len(list(_problem_calls())) > 100


def test_a_long_value_is_cut_to_200_characters():
    text = str(Problem("train.epochs", "expected int", "9" * 100_000, "an integer", fix="e.g. 3"))
    assert len(text) < 400 and "... (100002 characters)" in text


def _cli(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_a_misspelt_base_recipe_is_named_in_the_childs_defaults(tmp_path):
    (tmp_path / "child.yaml").write_text("# @package _global_\n# A child.\ndefaults:\n  - cnn_trch\n  - _self_\n")
    run = _cli("recipe=child", "mode=lint", cwd=tmp_path, env={"COMPILER_RECIPE_PATH": str(tmp_path)})
    assert run.returncode == 2
    assert "recipe child: defaults: names the base recipe 'cnn_trch', which does not exist" in run.stderr
    assert "did you mean 'cnn_torch'?" in run.stderr


def test_a_wrong_package_header_is_named(tmp_path):
    (tmp_path / "mine.yaml").write_text("# @package train\n# Mine.\ntrain: {epochs: 1}\n")
    run = _cli("recipe=mine", "mode=lint", cwd=tmp_path, env={"COMPILER_RECIPE_PATH": str(tmp_path)})
    assert run.returncode == 2 and "`# @package` header put its keys under `train:`" in run.stderr
    assert "make `# @package _global_` the recipe file's first line" in run.stderr


def test_non_ascii_gets_the_quoting_it_needs(tmp_path):
    run = _cli("recipe=cnn_torch", "mode=lint", "model.path=/tmp/ü.onnx", cwd=tmp_path)
    assert run.returncode == 2 and "quote the value: \"model.path='/tmp/ü.onnx'\"" in run.stderr


def test_help_into_a_closed_pipe_is_no_error(tmp_path):
    run = subprocess.run(f"{sys.executable} -m compiler --help | head -1", shell=True, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.stdout.startswith("compiler:") and "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr


def test_an_overlong_name_exits_2_in_every_mode(tmp_path):
    for mode in ([], ["mode=lint"]):
        run = _cli("recipe=" + "x" * 300, *mode, cwd=tmp_path)
        assert run.returncode == 2 and "Traceback" not in run.stderr and "a config name is too long" in run.stderr
    assert not (tmp_path / "outputs").exists()


def test_an_unloadable_model_file_exits_2_whatever_is_wrong_with_it(tmp_path):
    import onnx

    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "truncated.onnx").write_bytes(onnx.helper.make_model(onnx.helper.make_graph(
        [], "g", [], [])).SerializeToString()[:3] + b"\xff\xff")
    (tmp_path / "text.onnx").write_text("not a model")
    for name in ("empty", "truncated", "text"):
        run = _cli("recipe=onnx_file", f"model.path={tmp_path / name}.onnx", cwd=tmp_path)
        assert run.returncode == 2, (name, run.stderr)
        assert "model.path: not a" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "outputs").exists()


def test_help_describes_each_recipe_whole():
    from compiler.discovery import recipe_summaries

    summaries = dict(recipe_summaries())
    assert summaries["two_head_torch"].endswith("accuracy reads the class head (model.label_output).")
    assert all(not s.startswith("Run:") and s for s in summaries.values())


def test_a_chained_message_is_shown_whole_on_one_line():
    from compiler.errors import describe

    try:
        try:
            raise ValueError("Hydra refuses os.system\nbecause it allows\narbitrary code execution")
        except ValueError as inner:
            raise RuntimeError("Error in call to target") from inner
    except RuntimeError as exc:
        text = describe(exc)
    assert "ValueError: Hydra refuses os.system because it allows arbitrary code execution" in text
    assert "\n" not in text
