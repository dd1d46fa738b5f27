"""The stage cache (compiler/cache.py) on its own: keys, commit, look-up, eviction of a damaged entry, and two jobs
committing the same key."""

from __future__ import annotations

import json
from pathlib import Path

from compiler.cache import RESULT_FILE, StageCache, runtime_file, sha256_artifact, sha256_path, stage_key


def _committed(cache: StageCache, key: str, payload: bytes) -> Path:
    work = cache.new_workspace("train")
    (work / "model.pt").write_bytes(payload)
    return cache.commit("train", key, work, {"artifact": "model.pt", "sha256": sha256_artifact(work / "model.pt"),
                                             "info": {"epochs": 1}})


def test_a_key_changes_with_each_of_its_parts_and_not_with_their_order():
    base = stage_key("train", {"a": 1, "b": [1, 2]}, {"export": "x"}, {"torch": "2.13"})
    assert base == stage_key("train", {"b": [1, 2], "a": 1}, {"export": "x"}, {"torch": "2.13"})
    assert len({base, stage_key("export", {"a": 1, "b": [1, 2]}, {"export": "x"}, {"torch": "2.13"}),
                stage_key("train", {"a": 2, "b": [1, 2]}, {"export": "x"}, {"torch": "2.13"}),
                stage_key("train", {"a": 1, "b": [1, 2]}, {"export": "y"}, {"torch": "2.13"}),
                stage_key("train", {"a": 1, "b": [1, 2]}, {"export": "x"}, {"torch": "2.14"})}) == 5


def test_a_committed_entry_is_found_with_its_result_and_path(tmp_path):
    cache = StageCache(tmp_path)
    placed = _committed(cache, "k1", b"weights")
    found = cache.lookup("train", "k1")
    assert found["path"] == str(placed) and found["info"] == {"epochs": 1}
    assert json.loads((placed.parent / RESULT_FILE).read_text())["sha256"] == found["sha256"]
    assert cache.lookup("train", "other") is None
    assert [p.name for p in (tmp_path / "train").iterdir()] == ["k1"]  # no workspace left behind


def test_a_damaged_entry_is_evicted_and_the_key_can_be_committed_again(tmp_path):
    cache = StageCache(tmp_path)
    placed = _committed(cache, "k1", b"weights")
    placed.write_bytes(b"tampered")
    assert cache.lookup("train", "k1") is None and not placed.parent.exists()
    again = _committed(cache, "k1", b"weights")
    assert cache.lookup("train", "k1")["path"] == str(again) and again.read_bytes() == b"weights"


def test_the_second_commit_of_a_key_keeps_the_first_and_leaves_no_workspace(tmp_path):
    cache = StageCache(tmp_path)
    first = _committed(cache, "k1", b"first")
    second = _committed(cache, "k1", b"second")
    assert first == second and first.read_bytes() == b"first"
    assert [p.name for p in (tmp_path / "train").iterdir()] == ["k1"]


def test_an_engines_runtime_settings_are_part_of_its_hash(tmp_path):
    engine = tmp_path / "model.ort"
    engine.write_bytes(b"engine")
    alone = sha256_artifact(engine)
    runtime_file(engine).write_text('{"providers": [["CUDAExecutionProvider", {}]]}')
    assert runtime_file(engine).name == "model.runtime.json"
    with_settings = sha256_artifact(engine)
    runtime_file(engine).write_text('{"providers": [["CPUExecutionProvider", {}]]}')
    assert len({alone, with_settings, sha256_artifact(engine)}) == 3


def test_a_folder_hashes_by_its_names_and_bytes(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.txt").write_text("same")
    assert sha256_path(tmp_path / "a") == sha256_path(tmp_path / "b")
    (tmp_path / "b" / "x.txt").rename(tmp_path / "b" / "y.txt")
    assert sha256_path(tmp_path / "a") != sha256_path(tmp_path / "b")
