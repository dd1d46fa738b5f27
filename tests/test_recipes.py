"""Every recipe in recipes/ compiles and verifies with tiny overrides."""

import pytest

from tests.conftest import RECIPES, TINY


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_compiles_with_tiny_overrides(compile_cli, recipe):
    run = compile_cli(f"recipe={recipe}", *TINY)
    assert run.code == 0, run.output
    report = run.report
    assert report["status"] == "passed"
    assert report["metrics"]["max_abs_error"]["engine"] <= report["recipe_config"]["verify"]["atol"] * 10
    assert 0.0 <= report["metrics"]["accuracy"]["engine"] <= 1.0


def test_every_recipe_starts_with_its_command():
    from tests.conftest import REPO

    for recipe in RECIPES:
        head = (REPO / "recipes" / f"{recipe}.yaml").read_text().splitlines()[:4]
        assert head[0] == "# @package _global_", recipe
        assert any(f"python -m compiler recipe={recipe}" in line for line in head), recipe
