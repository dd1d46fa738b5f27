"""Content-addressed stage cache.

A stage's key hashes its slice of the recipe, its inputs' content hashes and the versions of
the tools that run it. Entries are built in a temporary folder and renamed into place, so a
killed run never leaves an entry that a later run trusts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Optional

from compiler import __version__
from compiler.file_hashes import sha256_file
from compiler.onnx_files import artifact_files as onnx_artifact_files

RESULT_FILE = "result.json"
log = logging.getLogger("compiler")


@dataclass
class CacheConfig:
    enabled: bool = True
    dir: Optional[str] = None   # default: $COMPILER_CACHE_DIR, else $XDG_CACHE_HOME/compiler, else ~/.cache/compiler


def cache_root(cache_cfg: Any) -> Path:
    if cache_cfg.dir:
        return Path(cache_cfg.dir).expanduser()
    if os.environ.get("COMPILER_CACHE_DIR"):
        return Path(os.environ["COMPILER_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "compiler"


def tool_versions(dists: tuple[str, ...]) -> dict[str, str]:
    versions = {}
    for dist in dists:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


RUNTIME_SUFFIX = ".runtime.json"  # an engine's runtime settings, beside it (backends/onnxruntime.runtime_file)


def runtime_file(engine: Path) -> Path:
    """Where an engine's runtime settings live: beside it, `model.opt.onnx` -> `model.opt.runtime.json`."""
    return engine.with_name(engine.name.rsplit(".", 1)[0] + RUNTIME_SUFFIX)


def artifact_files(path: Path) -> list[Path]:
    """An artifact's files: an ONNX model with the external-data files beside it, and an engine's runtime
    settings; a folder (a serving repository) as one; anything else alone."""
    if path.is_dir():
        return [path]
    sidecar = runtime_file(path)
    extra = [sidecar] if sidecar.is_file() and sidecar != path else []
    if path.suffix != ".onnx":
        return [path] + extra

    return onnx_artifact_files(path) + extra


def sha256_artifact(path: Path) -> str:
    """The hash of an artifact with its weights files: a change to either is a different artifact."""
    if path.is_dir():
        return sha256_path(path)
    files = artifact_files(path)
    if len(files) == 1:
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def sha256_path(path: Path) -> str:
    """Content hash of a file, or of every file under a folder (names and bytes, in sorted order)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def stage_key(stage: str, config: Mapping[str, Any], inputs: Mapping[str, str], tools: Mapping[str, str]) -> str:
    payload = {"stage": stage, "config": config, "inputs": dict(inputs), "tools": dict(tools), "compiler": __version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


class StageCache:
    """`<root>/<stage>/<key>/` holds one stage's artifact and its result.json."""

    def __init__(self, root: Path):
        self.root = root

    def lookup(self, stage: str, key: str) -> Optional[dict]:
        entry = self.root / stage / key
        try:
            result = json.loads((entry / RESULT_FILE).read_text())
        except (OSError, ValueError):
            return None
        artifact = entry / result.get("artifact", "")
        if not artifact.is_file() or sha256_artifact(artifact) != result.get("sha256"):
            self._evict(entry)
            log.warning("cache: the %s entry %s was damaged (its files no longer match their recorded hash); "
                        "evicted, rebuilding", stage, key[:12])
            return None
        return {**result, "path": str(artifact)}

    def _evict(self, entry: Path) -> None:
        """Move a damaged entry out of the way atomically, so the rebuilt one can be committed under its key."""
        aside = entry.with_name(f".damaged-{uuid.uuid4().hex}")
        try:
            os.rename(entry, aside)
        except OSError:
            return  # another job evicted it first
        shutil.rmtree(aside, ignore_errors=True)

    def new_workspace(self, stage: str) -> Path:
        path = self.root / stage / f".tmp-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        return path

    def commit(self, stage: str, key: str, workspace: Path, result: dict) -> Path:
        """Seal a workspace as the entry for `key` (result.json last, then an atomic rename)."""
        (workspace / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str))
        entry = self.root / stage / key
        try:
            os.rename(workspace, entry)
        except OSError:  # another job committed the same key first; its entry is as good as ours
            shutil.rmtree(workspace, ignore_errors=True)
        return entry / result["artifact"]
