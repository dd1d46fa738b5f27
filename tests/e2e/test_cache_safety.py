"""Crash safety and concurrency of the stage cache, with real processes and real SIGKILLs."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.cache import RESULT_FILE, sha256_artifact
from tests.conftest import TINY, artifact_hashes

ARGS = ["recipe=cnn_torch", *TINY]


def _start(run_dir: Path, cache: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "COMPILER_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "compiler", *ARGS, f"hydra.run.dir={run_dir}"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _hashes(run_dir: Path) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "passed"
    return artifact_hashes(report, "verify")


def _cache_is_sound(cache: Path) -> None:
    """Every committed entry is complete: result.json and an artifact with the recorded hash."""
    for entry in cache.glob("*/*"):
        if entry.name.startswith(".tmp-") or entry.parent.name.startswith("."):
            continue  # an interrupted build's workspace: never looked up; .plots and .latency are not entries
        result = json.loads((entry / RESULT_FILE).read_text())
        assert sha256_artifact(entry / result["artifact"]) == result["sha256"], entry  # with its weights and runtime


@pytest.mark.slow
def test_killed_compiles_never_leave_a_trusted_partial_artifact(tmp_path, forked_cli):
    """Each compile is a process of its own (forked from the test server, tests/forked_cli.py), SIGKILLed with its
    process group at a point spread over a whole compile's duration."""

    def compile_(run_dir: Path, cache: Path, timeout: float = 600) -> int:
        env = {**os.environ, "COMPILER_CACHE_DIR": str(cache)}
        return forked_cli.run([*ARGS, f"hydra.run.dir={run_dir}"], env, tmp_path, timeout)[0]

    durations = []
    for attempt in range(2):  # the first run in a new environment also builds caches (fonts, bytecode)
        reference_dir = tmp_path / f"reference{attempt}"
        started = time.perf_counter()
        assert compile_(reference_dir, tmp_path / f"ref-cache{attempt}") == 0
        durations.append(time.perf_counter() - started)
    total = min(durations)
    reference = _hashes(reference_dir)

    cache = tmp_path / "cache"
    killed_at = []
    for k in range(1, 7):  # six kill points spread over the compile (startup, every stage, latency)
        delay = total * k / 8
        try:
            compile_(tmp_path / f"killed{k}", cache, timeout=delay)
        except subprocess.TimeoutExpired:  # SIGKILLed at `delay`
            killed_at.append(round(delay, 2))
        _cache_is_sound(cache)
        recovered = tmp_path / f"recovered{k}"
        assert compile_(recovered, cache) == 0
        assert _hashes(recovered) == reference  # same artifacts as an uninterrupted compile
        shutil.rmtree(cache)  # the next kill starts from a cold cache again
    assert len(killed_at) >= 4, killed_at  # most runs were really killed mid-way


def test_parallel_jobs_on_one_cache_match_a_sequential_run(tmp_path):
    sequential = tmp_path / "sequential"
    assert _start(sequential, tmp_path / "seq-cache", tmp_path).wait(timeout=600) == 0
    shared = tmp_path / "shared-cache"
    procs = [_start(tmp_path / f"parallel{i}", shared, tmp_path) for i in range(4)]
    assert [p.wait(timeout=900) for p in procs] == [0, 0, 0, 0]
    expected = _hashes(sequential)
    for i in range(4):
        assert _hashes(tmp_path / f"parallel{i}") == expected
    _cache_is_sound(shared)
    assert not list(shared.glob("*/.tmp-*"))  # losers of a commit race clean up after themselves
