"""Files' sha256, each computed once per run, and copies known to hold the same bytes.

Below the cache and the weights module both: the cache hashes artifacts, and saving weights tells it which new
file is a byte-for-byte copy of one it may already have hashed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_hashed: dict[tuple, str] = {}  # (device, inode, size, mtime) -> sha256: one hash per file per run


def sha256_file(path: Path) -> str:
    """A file's sha256, computed once per run: the same unchanged file (a stage's artifact, the recipe's
    model.path, each key that names it) is read once, however many keys and checks ask, and a workspace renamed
    into the cache is still the file it hashed."""
    key = _file_key(path)
    if key not in _hashed:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(8 << 20), b""):
                digest.update(block)
        _hashed[key] = digest.hexdigest()
    return _hashed[key]


def _file_key(path: Path) -> tuple:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def known_sha256(path: Path) -> str | None:
    """The file's sha256 when this run has already computed it (or copied the file from one it had), else None:
    a question that never reads the file."""
    try:
        return _hashed.get(_file_key(path))
    except OSError:
        return None


def same_content(source: Path, copy: Path) -> None:
    """`copy` was just made byte for byte from `source`: its hash is the source's, when that is known."""
    known = _hashed.get(_file_key(source))
    if known:
        _hashed[_file_key(copy)] = known
