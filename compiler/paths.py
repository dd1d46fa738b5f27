"""Whether a folder could be created and written, found out before any work (run dirs, the cache)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def writable(target: Path) -> tuple[bool, Path]:
    """(can `target` be created/written, the existing folder that decides it). Really tries: permission bits
    say nothing for root, or for /proc-like file systems. Leaves nothing behind."""
    probe = target.expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return False, probe
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".compiler-probe-")
        os.close(fd)
        os.unlink(name)
        return True, probe
    except OSError:
        return False, probe
