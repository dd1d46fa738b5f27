"""An installed wheel works on its own: every package ships, conf/ and recipes/ inside it, and a real compile runs
from a fresh environment that has no editable install and no checkout on its path."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> tuple[Path, dict]:
    """A fresh venv holding only the built wheel; the test environment's site-packages (the dependencies) sit
    after it on the path as a plain folder, so the editable install's .pth finder there is never read."""
    root = tmp_path_factory.mktemp("wheel")
    wheels, venv = root / "wheels", root / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    *map(str, wheels.glob("*.whl"))], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return python, env


def _py(wheel_env, code: str, cwd: Path) -> str:
    python, env = wheel_env
    return subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_wheel_ships_every_package(wheel_env, tmp_path):
    where = _py(wheel_env, "import compiler, compiler.resources as r; print(compiler.__file__); print(r.conf_dir())",
                tmp_path).splitlines()
    installed = Path(where[0]).parent
    assert REPO not in installed.parents and "site-packages" in str(installed)
    assert where[1] == str(installed / "_conf")
    source = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "compiler").rglob("__init__.py")}
    shipped = {p.parent.relative_to(installed.parent).as_posix() for p in installed.rglob("__init__.py")}
    assert source <= shipped, f"missing from the wheel: {sorted(source - shipped)}"
    assert sorted(p.stem for p in (installed / "_recipes").glob("*.yaml")) == sorted(
        p.stem for p in (REPO / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe, extra", [("cnn_torch", []), ("cnn_tf", ["data.limit=120"])])
def test_wheel_compiles_a_recipe_end_to_end(wheel_env, tmp_path, recipe, extra):
    python, env = wheel_env
    env = {**env, "COMPILER_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([str(python), "-m", "compiler", f"recipe={recipe}", *TINY, *extra,
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"compiler: {recipe}: PASSED" in run.stdout
    assert (tmp_path / "run" / "model.opt.onnx").is_file()
    assert f"compiler: {recipe}: PASSED" in (tmp_path / "run" / "compiler.log").read_text()  # the log ends with it
