"""torch and TensorFlow recipes: the same engine interface, and neither imports the other framework."""

import json
import subprocess
import sys
import textwrap

import onnx
import pytest

from tests.conftest import TINY


def _signature(path):
    model = onnx.load(str(path))
    initializers = {i.name for i in model.graph.initializer}

    def describe(values):
        return [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                 v.type.tensor_type.elem_type) for v in values if v.name not in initializers]
    return describe(model.graph.input), describe(model.graph.output)


def test_sweep_over_both_frameworks_builds_engines_with_one_interface(compile_cli, tmp_path):
    run = compile_cli("-m", "recipe=cnn_torch,cnn_tf", *TINY)
    assert run.code == 0, run.output
    jobs = sorted(p.parent for p in tmp_path.glob("multirun/*/*/*/report.json"))
    assert len(jobs) == 2
    signatures = []
    for job in jobs:
        report = json.loads((job / "report.json").read_text())
        signatures.append(_signature(job / report["stages"]["build"]["artifact"]))
    assert signatures[0] == signatures[1]
    (inputs, outputs) = signatures[0]
    assert inputs == [("input", ["batch", 1, 28, 28], onnx.TensorProto.FLOAT)]  # NCHW for both
    assert outputs == [("logits", ["batch", 10], onnx.TensorProto.FLOAT)]


def test_tensorflow_can_keep_the_keras_layout(compile_cli):
    run = compile_cli("recipe=cnn_tf", *TINY, "export.input_layout=nhwc")
    assert run.code == 0, run.output
    assert (run.report["training"]["steps"], run.report["training"]["execution"]) == (3, "eager")  # 192 samples, 1 epoch
    inputs, _ = _signature(run.run_dir / run.report["stages"]["build"]["artifact"])
    assert inputs == [("input", ["batch", 28, 28, 1], onnx.TensorProto.FLOAT)]


@pytest.mark.parametrize("recipe, forbidden", [("cnn_torch", ("tensorflow", "keras", "tf2onnx")),
                                               ("cnn_tf", ("torch",))])
def test_a_compile_never_imports_the_other_framework(tmp_path, recipe, forbidden):
    code = textwrap.dedent(f"""
        import sys
        sys.argv = ["compiler", "recipe={recipe}", "hydra.run.dir={tmp_path / 'run'}", *{TINY!r}]
        import compiler.cli

        def exit_here(code, multirun=False):  # the CLI ends a single run with os._exit; stay to look at sys.modules
            raise SystemExit(code)

        compiler.cli._exit = exit_here
        try:
            compiler.cli.main()
        except SystemExit as exc:
            print("EXIT", exc.code, "LOADED", sorted(m for m in {forbidden!r} if m in sys.modules))
    """)
    env = {"COMPILER_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert "EXIT 0 LOADED []" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
