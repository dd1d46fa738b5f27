"""How much memory this machine has, and what the generated inputs of a recipe would take of it.

Verification, calibration and latency generate inputs at the max of every dim; a recipe whose max shapes
cannot fit is refused at lint (exit 2) with the estimate and the dims to change, before anything runs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "int8": 1, "uint8": 1,
            "bool": 1, "string": 8}
# the inputs of one batch are a small part of a run's peak: the framework model, its activations and the
# engine's hold several times more, so a batch whose inputs alone take more than this share cannot run
INPUT_SHARE = 0.25
GIB = 1024 ** 3


def machine_bytes() -> int:
    """Physical memory, or the cgroup's limit where that is lower (a container)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def batch_bytes(inputs: Sequence[tuple[str, Sequence[int | str]]], maxima: Mapping[str, int]) -> int:
    """Bytes of one generated batch: every input at the max of its dims. `inputs` is (dtype, shape) pairs."""
    total = 0
    for dtype, shape in inputs:
        sizes = [d if isinstance(d, int) else maxima.get(str(d), 1) for d in shape]
        total += math.prod(sizes) * ITEMSIZE.get(dtype, 4)
    return total
