"""conf/ and recipes/ ship inside the wheel: an installed wheel compiles from any directory."""

import os
import subprocess
import sys

from tests.conftest import REPO


def test_installed_wheel_finds_its_config_and_recipes(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import compiler.resources as r; print(r.conf_dir())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert where.strip() == str(target / "compiler" / "_conf")
    recipes = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
    shipped = sorted(p.stem for p in (target / "compiler" / "_recipes").glob("*.yaml"))
    assert shipped == recipes
    run = subprocess.run([sys.executable, "-m", "compiler", "recipe=cnn_torch", "mode=lint"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0 and "is valid" in run.stdout, run.stderr
