"""The command line a newcomer meets: help and discovery without a recipe, every bad input exits 2 with its key path,
a fix and no traceback, and every fix text lint prints is an override Hydra parses when pasted."""

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, recipe_cfg
from tests.recipe.test_lint import BAD_INPUTS


def _cli(*args, env=None, cwd=None):
    import os

    return subprocess.run([sys.executable, "-m", "compiler", *args], capture_output=True, text=True, cwd=cwd or REPO,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_needs_no_recipe_and_lists_the_catalogue(flag):
    run = _cli(flag)
    assert run.returncode == 0, run.stderr
    for recipe in (p.stem for p in (REPO / "recipes").glob("*.yaml")):
        assert f"  {recipe} " in run.stdout
    assert "Exit codes:" in run.stdout and "mode=lint" in run.stdout and "README.md" in run.stdout
    assert _cli(flag, "recipe=cnn_torch").stdout == run.stdout


def test_help_imports_nothing_heavy():
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "compiler", "--help"], capture_output=True,
                         text=True, cwd=REPO)
    imported = {line.split("|")[-1].strip().split(".")[0] for line in run.stderr.splitlines() if "|" in line}
    assert "compiler" in imported
    assert not imported & {"torch", "tensorflow", "onnx", "onnxruntime", "polygraphy", "numpy"}, imported


def test_version_names_the_compiler_and_its_tools():
    import importlib.metadata as md

    run = _cli("--version")
    assert run.returncode == 0
    assert run.stdout.splitlines()[0] == "compiler 0.1.0"
    assert f"  onnx {md.version('onnx')}" in run.stdout and "hydra-core" in run.stdout


@pytest.mark.parametrize("how", [["list"], ["mode=list"]])
def test_list_shows_passes_precisions_backends_and_providers(how):
    run = _cli(*how)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "* fold_constants: evaluate constant subgraphs" in out
    assert "        fold_shapes: true or false; default True (fold Shape ops of static dims too)" in out
    assert "  tf32  fp32 layers in TF32" in out and "  cuda      CUDAExecutionProvider" in out
    assert "onnxruntime  onnxruntime, on its providers" in out and "CPU: fp32, fp16, int8" in out


NEWCOMER = [
    # (arguments, key path in the message, words)
    (["cache.dir=${oc.env:NOPE_NOT_SET}"], "cache.dir", "the environment variable 'NOPE_NOT_SET' is not set"),
    (["train.epochs=${nope.key}"], "train.epochs", "names 'nope.key', which is no key"),
    (["train.epochs=${train.batch_size}x"], "train.epochs", "could not be converted to Integer"),
    (["~model"], "model", "deleted (`~model`)"),
    (["~train.optimizer"], "train.optimizer", "cannot be deleted"),
    (["train.device=gpu"], "train.device", "did you mean 'cuda'?"),
    (["engine.tensorrt.tactic_sources=[cublaz]"], "engine.tensorrt.tactic_sources[0]", "did you mean 'cublas'?"),
    (["recipe=cnn_torhc"], "recipe", "did you mean recipe=cnn_torch?"),
    (["model.inputs[0].range=[0,3]"], "<command line>", "key.0.field, not key[0].field"),
    (["train.device=cuda"], "train.device", "no CUDA GPU was found"),
    (["train.precision=fp16"], "train.precision", "needs a CUDA device"),
    (["engine.onnxruntime.providers=[CudaExecutionProvidr]"], "engine.onnxruntime.providers[0]", "did you mean"),
    (["+model.factory._target_=torchvision.models.resnet18", "model.layers=[]"], "model.factory._target_",
     "its package 'torchvision' is not installed"),
    (["recipe=cnn_tf", "train.precision=bf16"], "train.precision", "Keras recipes train in fp32 only"),
]


@pytest.mark.parametrize("args, key, words", NEWCOMER, ids=lambda x: str(x)[:40])
def test_a_newcomers_bad_input_exits_2_with_its_key_and_a_fix(args, key, words, tmp_path):
    argv = (["recipe=cnn_torch"] if not any(a.startswith("recipe=") for a in args) else []) + args
    for mode in (["mode=lint"], [f"hydra.run.dir={tmp_path / 'run'}"]):  # lint, and a real run: both exit 2
        run = _cli(*argv, *mode, cwd=tmp_path)
        assert run.returncode == 2, run.stdout + run.stderr
        assert "Traceback" not in run.stderr and "Error merging override" not in run.stderr, run.stderr
        line = next((x for x in run.stderr.splitlines() if x.startswith(f"  - {key}: ")), None)
        assert line and words in line and "Fix:" in line, run.stderr
    assert not (tmp_path / "run" / "report.json").exists()


def test_a_sweep_that_does_not_parse_exits_2(tmp_path):
    run = _cli("-m", "recipe=cnn_torch", "train.epochs=choice(1,", cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "Hydra cannot parse the override" in run.stderr and "got 'train.epochs=choice(1,'" in run.stderr


def test_a_user_recipe_with_bad_yaml_names_the_file_and_line(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "broken.yaml").write_text("# @package _global_\nframework: torch\ntrain: {epochs: 3\nmodel:\n  - x\n")
    (folder / "nopkg.yaml").write_text("framework: torch\ntrain: {epochs: 3}\n")
    env = {"COMPILER_RECIPE_PATH": str(folder)}
    broken = _cli("recipe=broken", "mode=lint", env=env, cwd=tmp_path)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert f"YAML syntax error in recipe file {folder / 'broken.yaml'}: line 4, column 6" in broken.stderr
    nopkg = _cli("recipe=nopkg", "mode=lint", env=env, cwd=tmp_path)
    assert nopkg.returncode == 2 and "its first line is not `# @package _global_`" in nopkg.stderr


def test_type_errors_hide_no_cross_field_problem(tmp_path):
    run = _cli("recipe=cnn_torch", "mode=lint", "engine.precision=fp33", "export.opset=99", "model.dims.batch=[64,32,1]",
               cwd=tmp_path)
    assert run.returncode == 2
    assert "(3 problems)" in run.stderr
    for key in ("engine.precision", "export.opset", "model.dims.batch"):
        assert f"  - {key}: " in run.stderr


def test_the_documented_dims_syntax_works_when_pasted(tmp_path):
    """recipes/onnx_file.yaml and README teach `model.dims.NAME=[min,opt,max]` for a dim the recipe lacks."""
    assert "`model.dims.NAME=[min,opt,max]`" in (REPO / "recipes" / "onnx_file.yaml").read_text()
    run = _cli("recipe=bert_torch", "mode=lint", "model.dims.extra=[1,2,3]", cwd=tmp_path)
    assert run.returncode == 0, run.stderr


# --- every fix text lint prints parses as an override ------------------------------------------------------

_OVERRIDE = re.compile(r"^[+~]{0,2}[a-z_][\w]*(\.[\w]+)+=\S+$")


def _overrides_in(fix: str) -> list[str]:
    quoted = re.findall(r"'([+~]{0,2}[a-z_][\w.]*=[^']+)'", fix)
    rest = re.sub(r"'[^']*'", " ", fix)
    tokens = [t.strip("().,;`") for t in rest.split()]
    return quoted + [t for t in tokens if _OVERRIDE.match(t) and "${" not in t]


def _fixes() -> list[str]:
    from compiler.cli import recipe_problems

    fixes = []
    for overrides, _, _ in BAD_INPUTS + NEWCOMER:
        recipe = next((o.split("=", 1)[1] for o in overrides if o.startswith("recipe=")), "cnn_torch")
        rest = [o for o in overrides if not o.startswith(("recipe=", "hydra.", "~"))]
        try:
            cfg = recipe_cfg(recipe, *rest)
        except Exception:
            continue  # a composition error: test_a_newcomers_bad_input... covers its text
        fixes += [p.fix for p in recipe_problems(cfg) if p.fix]
    from hydra.errors import OverrideParseException

    from compiler.composition import _problem_of

    fixes.append(_problem_of(OverrideParseException("a.b=[1", "no viable alternative"), ["a.b=[1"]).fix)
    return fixes


def test_every_fix_text_is_a_valid_override_when_pasted():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixes = _fixes()
    found = [o for fix in fixes for o in _overrides_in(fix)]
    assert len(fixes) >= 20 and len(found) >= 8, (len(fixes), found)
    for override in found:
        parser.parse_overrides([override])  # raises on an override Hydra would refuse
