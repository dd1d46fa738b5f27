"""The error ledger: how far each artifact's outputs drift from the one before it."""

from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np
from polygraphy.comparator import Comparator, CompareFunc
from polygraphy.logger import G_LOGGER
from polygraphy.util import array as _polygraphy_array


def _is_torch_if_loaded(obj: Any) -> bool:
    """Polygraphy's own check imports torch (~2 s) to test every array; nothing is a torch.Tensor
    unless torch is already loaded, so a TensorFlow or ONNX compile never needs to import it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


_polygraphy_array.is_torch = _is_torch_if_loaded

G_LOGGER.module_severity = G_LOGGER.CRITICAL  # the ledger reports mismatches itself, gate by gate


def error_ledger(runners: Sequence[Any], feeds: Sequence[dict], boundaries: Sequence[tuple[int, int]],
                 atol: float, rtol: float) -> tuple[list[dict], dict]:
    """Run every runner on the same feeds and compare the given (reference, candidate) pairs.

    Returns one ledger row per boundary and output (max abs/rel error over all feeds, pass/fail
    by Polygraphy's element-wise atol/rtol check), and the raw outputs by runner name.
    """
    results = Comparator.run(list(runners), data_loader=list(feeds), warm_up=0)
    compare = CompareFunc.simple(atol=atol, rtol=rtol)
    accuracy = Comparator.compare_accuracy(results, comparisons=list(boundaries), compare_func=compare)[0]
    rows = []
    for (ref, cand), iterations in accuracy.items():
        for name in iterations[0]:
            per_iter = [it[name] for it in iterations]
            rows.append({
                "reference": ref, "candidate": cand, "output": name,
                "max_abs_error": float(max(r.max_absdiff for r in per_iter)),
                "max_rel_error": float(max(r.max_reldiff for r in per_iter)),
                "passed": all(bool(r) for r in per_iter),
            })
    outputs = {name: [np.asarray(it[o]) for it in iters for o in it.keys()] for name, iters in results.items()}
    return rows, outputs
