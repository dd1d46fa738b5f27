"""A machine-wide lock that keeps latency measurements apart from every other job's work.

Heavy stages hold it shared; timing holds it exclusively, so no two jobs of a sweep (or two compiles
started by hand) ever time an engine while another trains, exports or builds. A turnstile keeps a
steady stream of shared holders from starving the timer. The lock files live in the system temp folder
(`COMPILER_LOCK_DIR` to move them), which every job on one machine sees.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _lock_dir() -> Path:
    folder = Path(os.environ.get("COMPILER_LOCK_DIR") or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def _flock(name: str, mode: int) -> Iterator[None]:
    with open(_lock_dir() / name, "a+") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def working() -> Iterator[None]:
    """Held (shared) while a stage computes: any number of jobs at once, but never while one is timing."""
    with _flock("compiler-turnstile.lock", fcntl.LOCK_EX):
        pass  # wait behind a timer that is queueing for the lock
    with _flock("compiler-work.lock", fcntl.LOCK_SH):
        yield


@contextmanager
def timing() -> Iterator[None]:
    """Held (exclusive) while latency is measured: no other job computes meanwhile."""
    with _flock("compiler-turnstile.lock", fcntl.LOCK_EX):
        with _flock("compiler-work.lock", fcntl.LOCK_EX):
            yield
