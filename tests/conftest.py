"""Shared helpers: run the real CLI in a subprocess with an isolated cache and run dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

# The tests run on every core at once (pytest-xdist), and so do the compiles they start: OpenMP threads (torch's)
# that spin while they wait for work would take the CPU from the other workers. Waiting passively, the suite took
# 5 min 51 s of wall clock and 9 min 13 s of CPU on two cores, against 6 min 18 s and 10 min 21 s spinning.
# Tests assert no timings; a user's compile keeps OpenMP's default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
# Small enough for CI, real enough to exercise every stage.
TINY = ["train.epochs=1", "data.limit=240", "verify.latency.iterations=3", "verify.latency.warmup=1",
        "verify.latency.warmup_seconds=0", "verify.latency.quiet_tries=1",
        "verify.max_accuracy_drop=100", "verify.min_accuracy=null"]


def artifact_hashes(report: dict, *skip: str) -> dict[str, str]:
    """Each stage's artifact hash from a report, but for stages that are never cached (latency: a measurement of
    this run, not an artifact that another run would reproduce) and those in `skip`."""
    from compiler.pipeline import STAGES

    measured = {s.name for s in STAGES if not s.cached}
    return {name: s["sha256"] for name, s in report["stages"].items() if name not in measured and name not in skip}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    run_dir: Path

    @property
    def report(self) -> dict:
        return json.loads((self.run_dir / "report.json").read_text())

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def pytest_collection_modifyitems(items: list) -> None:
    """A test that compiles through the real CLI (`compile_cli`) is end to end: marked `e2e`, so that
    `pytest -m 'not e2e'` runs the other tests alone (about 2.5 minutes on two cores)."""
    for item in items:
        if "compile_cli" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True, scope="session")
def _own_timing_lock(tmp_path_factory) -> None:
    """Each pytest-xdist worker (and every compile it starts) times under a lock of its own: tests assert no
    timings, and a lock shared with the other workers would only make them wait for each other."""
    os.environ["COMPILER_LOCK_DIR"] = str(tmp_path_factory.mktemp("locks"))


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


SHARED_STAGES = ("train",)   # what every test's cache starts with: a recipe trains once per test session


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """The train entries of the stage cache, shared by every test and every pytest-xdist worker (the workers' base
    folders share a parent). Entries are copied in and out whole, each committed by an atomic rename, as the
    cache itself commits (compiler/cache.py): a test's own cache is still its own to damage or inspect."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-cache"
    root.mkdir(exist_ok=True)
    return root


def _copy_entries(src: Path, dst: Path) -> set[Path]:
    """Each committed entry of SHARED_STAGES in `src` that `dst` lacks, copied whole and renamed into place; returns
    the entries placed."""
    placed = set()
    for stage in SHARED_STAGES:
        for entry in sorted((src / stage).glob("[!.]*")):
            target = dst / stage / entry.name
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = target.with_name(f".copy-{uuid.uuid4().hex}")
            shutil.copytree(entry, staging)
            try:
                os.rename(staging, target)
                placed.add(target)
            except OSError:  # another worker placed the same entry first
                shutil.rmtree(staging, ignore_errors=True)
    return placed


def _entries(cache: Path) -> set[Path]:
    return {entry for entry in cache.glob("*/[!.]*") if entry.is_dir()} if cache.is_dir() else set()


class ForkedCli:
    """`python -m compiler` forked from a server that has imported torch, onnx, onnxruntime, Hydra and the compiler
    once (tests/forked_cli.py): the same process a subprocess compile would be, without ~2.5 s of imports each.
    A run whose environment changes what gets imported (PYTHONPATH) or found (PATH) runs as a real subprocess."""

    SUBPROCESS_ENV = ("PYTHONPATH", "PATH")

    def __init__(self, log: Path):
        read, write = os.pipe()
        self.log = log.open("w")
        self.server = subprocess.Popen([sys.executable, str(REPO / "tests" / "forked_cli.py"), str(write)],
                                       stdin=subprocess.PIPE, stdout=self.log, stderr=self.log, text=True,
                                       pass_fds=(write,))
        os.close(write)
        self.answers = os.fdopen(read)

    @classmethod
    def takes(cls, env: dict | None) -> bool:
        return not any(key in (env or {}) for key in cls.SUBPROCESS_ENV)

    def run(self, args: list[str], env: dict, cwd: Path, timeout: int) -> tuple[int, str, str]:
        out, err = cwd / f".cli-{uuid.uuid4().hex}.out", cwd / f".cli-{uuid.uuid4().hex}.err"
        request = {"args": args, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err),
                   "timeout": timeout}
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        answer = json.loads(self.answers.readline() or '{"code": -1}')
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        out.unlink()
        err.unlink()
        if answer.get("timeout"):
            raise subprocess.TimeoutExpired(["python", "-m", "compiler", *args], timeout, stdout, stderr)
        return answer["code"], stdout, stderr

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)
        self.answers.close()
        self.log.close()



@pytest.fixture(scope="session")
def forked_cli(tmp_path_factory) -> ForkedCli:
    server = ForkedCli(tmp_path_factory.mktemp("forked_cli") / "server.log")
    yield server
    server.close()


@pytest.fixture
def compile_cli(tmp_path: Path, cache_dir: Path, shared_cache: Path, forked_cli: ForkedCli):
    """Run `python -m compiler ARGS` with hydra.run.dir and the cache inside tmp_path. The cache starts with the
    session's trained models (`shared_cache`) unless `fresh=True`, and what the run trained is shared after it."""
    counter = iter(range(1000))

    def run(*args: str, env: dict | None = None, run_dir: Path | None = None, timeout: int = 600,
            fresh: bool = False) -> Run:
        run_dir = run_dir or tmp_path / f"run{next(counter)}"
        full_env = {**os.environ, "COMPILER_CACHE_DIR": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
        own_cache = Path(full_env["COMPILER_CACHE_DIR"])
        existed = own_cache.exists()
        seeded = set() if fresh else _copy_entries(shared_cache, own_cache)
        args = list(args)
        if not any(a.startswith("hydra.run.dir") for a in args) and "-m" not in args:
            args.append(f"hydra.run.dir={run_dir}")
        if ForkedCli.takes(env):
            code, stdout, stderr = forked_cli.run(args, full_env, tmp_path, timeout)
        else:
            proc = subprocess.run([sys.executable, "-m", "compiler", *args], cwd=tmp_path, env=full_env,
                                  capture_output=True, text=True, timeout=timeout)
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        if not existed and _entries(own_cache) <= seeded:  # the run wrote no cache (refused, cache off): none is left
            shutil.rmtree(own_cache, ignore_errors=True)
        _copy_entries(own_cache, shared_cache)
        return Run(code, stdout, stderr, run_dir)

    return run


def recipe_cfg(recipe: str, *overrides: str):
    """A typed recipe composed in-process (schema + recipe file + dotlist overrides), as Hydra would."""
    from omegaconf import OmegaConf

    from compiler.schema import RecipeConfig

    raw = OmegaConf.load(REPO / "recipes" / f"{recipe}.yaml")
    return OmegaConf.merge(OmegaConf.structured(RecipeConfig), raw, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
