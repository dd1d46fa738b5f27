"""Whether Triton may batch a model along the dim its inputs start with: only where the samples of a batch are
independent, which a name cannot tell (`[seq, batch, feat]` starts with time, and concatenating requests along time
mixes them). Checked on the model: two samples run together must give each sample's outputs run alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compiler.iospec import slice_batch

if TYPE_CHECKING:
    from compiler.iospec import IOSpec

SEED = 0


def mixing_reason(model: Path, io: IOSpec) -> str | None:
    """None where a batch of two equals its samples run one by one (on the standard-ops ONNX the engine was built
    from, on the CPU); else what differed."""
    import onnxruntime as ort

    from compiler.backends.onnxruntime import without_prepacking

    session = ort.InferenceSession(str(model), without_prepacking(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feed = io.random_feed(np.random.default_rng(SEED), io.shapes(0, "opt", batch=2))
    together = session.run(names, feed)
    for i in range(2):
        alone = session.run(names, slice_batch(feed, i, i + 1))
        for name, joint, single in zip(names, together, alone):
            part = joint[i:i + 1]
            if part.shape != single.shape:
                return f"output '{name}' of one sample has shape {list(single.shape)}, of two {list(joint.shape)}"
            if part.dtype.kind in "fc":
                scale = max(1.0, float(np.abs(single).max(initial=0.0)))
                if not np.allclose(part, single, rtol=1e-3, atol=1e-3 * scale, equal_nan=True):
                    return (f"output '{name}' of sample {i} changes when another sample runs beside it (the first "
                            f"dim '{io.batch_dim}' does not hold independent samples)")
            elif not np.array_equal(part, single):
                return f"output '{name}' of sample {i} changes when another sample runs beside it"
    return None
