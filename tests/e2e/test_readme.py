"""README.md stays true: its commands run, and its options table covers every recipe key."""

import re
import shlex

import pytest
from omegaconf import OmegaConf

from compiler.schema import RecipeConfig
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def _compiler_commands() -> list[list[str]]:
    commands = []
    for block in _bash_blocks():
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("python -m compiler"):
                commands.append(shlex.split(line)[3:])
    return commands


def test_readme_shows_the_quickstart():
    assert ["recipe=cnn_torch"] in _compiler_commands()


@pytest.mark.parametrize("args", _compiler_commands(), ids=lambda a: " ".join(a))
def test_readme_command_runs(compile_cli, args):
    """Each documented command, verbatim (the test only moves its outputs and cache into a temp dir)."""
    run = compile_cli(*args)
    assert run.code == 0, run.output
    if args[0] in ("--help", "list", "--version"):
        assert run.stdout.startswith(("compiler", "Recipes:")), run.stdout[:200]
    else:
        assert "PASSED" in run.stdout or "is valid" in run.stdout
    if args == ["recipe=cnn_torch"]:
        assert _summary_shape(run.stdout) == _summary_shape(_readme_summary())
    if args == ["recipe=cnn_tf"]:  # 5 epochs of 23 steps: traced into graphs (keras/fit.py, EAGER_MAX_STEPS)
        assert run.report["training"]["execution"] == "graph (tf.function)"


def _readme_summary() -> str:
    """The sample summary README shows after the quickstart."""
    return re.search(r"A run prints a summary.*?```\n(.*?)```", README, flags=re.S).group(1)


def _summary_shape(text: str) -> list[str]:
    """A summary with its numbers, timestamps and paths made generic: the lines and words must match."""
    lines = [line for line in text.splitlines() if line.startswith(("compiler: ", "  "))]
    lines = [re.sub(r"report: \S+", "report: PATH", line) for line in lines]
    return [re.sub(r"\d+(\.\d+)?(e[-+]\d+)?", "N", line) for line in lines]


def test_the_summary_shape_helper_sees_a_wrong_reference():
    sample = _readme_summary()
    assert _summary_shape(sample) != _summary_shape(sample.replace("torch->engine", "framework->engine"))


def _leaf_keys(node, prefix=""):
    for key in node.keys():
        path = f"{prefix}.{key}" if prefix else key
        child = node._get_node(key)
        if OmegaConf.is_dict(child) and key != "profiles":
            yield from _leaf_keys(child, path)
        else:
            yield path


def _documented_keys() -> set[str]:
    keys = set()
    for row in re.findall(r"^\| (`[^|]*) \|", README, flags=re.M):
        names = [n.strip().strip("`") for n in row.split(",")]
        parent = names[0].rsplit(".", 1)[0]
        keys.update(parent + n if n.startswith(".") else n for n in names)
    return keys


def test_options_table_lists_every_recipe_key():
    missing = set(_leaf_keys(OmegaConf.structured(RecipeConfig))) - _documented_keys()
    assert not missing, f"README's options table lacks: {sorted(missing)}"


def test_every_registered_pass_is_documented():
    from compiler.passes import REGISTRY

    for name in REGISTRY:
        assert f"| `{name}` |" in README, name


def test_recipe_catalogue_lists_every_recipe():
    for path in (REPO / "recipes").glob("*.yaml"):
        assert f"| `{path.stem}` |" in README, path.stem


def test_the_allow_list_is_the_codes():
    from compiler.security import DEFAULT_ALLOWED

    sentence = re.search(r"limited to an allow-list of prefixes \((.*?)\)\.", README, flags=re.S).group(1)
    assert re.findall(r"`([^`]+)`", sentence) == list(DEFAULT_ALLOWED)


def test_the_pass_counts_are_the_codes():
    from compiler.passes import REGISTRY
    from compiler.stages.surgery import DEFAULT_PASSES

    assert f"the default list of {len(DEFAULT_PASSES)} surgery passes" in README
    counted = re.findall(r"(\d+) (?:registered )?passes are registered", README)
    assert all(int(n) == len(REGISTRY) for n in counted)


def test_the_anatomy_example_is_its_recipe():
    """README's 'Recipe anatomy' block composes to exactly recipes/cnn_torch.yaml."""
    from compiler.schema import RecipeConfig

    block = re.search(r"## Recipe anatomy\n.*?```yaml\n(.*?)```", README, flags=re.S).group(1)
    assert "recipe=cnn_torch" in block
    anatomy = OmegaConf.merge(OmegaConf.structured(RecipeConfig), OmegaConf.create(block))
    recipe = OmegaConf.merge(OmegaConf.structured(RecipeConfig), OmegaConf.load(REPO / "recipes" / "cnn_torch.yaml"))
    assert OmegaConf.to_container(anatomy) == OmegaConf.to_container(recipe)
