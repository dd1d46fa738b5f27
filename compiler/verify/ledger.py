"""The error ledger: how far each artifact's outputs drift from the one before it."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from polygraphy.comparator import Comparator, CompareFunc
from polygraphy.logger import G_LOGGER

import compiler.verify.runners  # noqa: F401  (Polygraphy's torch check, patched there)

if TYPE_CHECKING:
    from compiler.iospec import IOSpec

G_LOGGER.module_severity = G_LOGGER.CRITICAL  # the ledger reports mismatches itself, gate by gate


def tolerances(io: IOSpec, atol: float, rtol: float) -> tuple[dict[str, float], dict[str, float]]:
    """Per-output atol/rtol for Polygraphy ("" is the default): model.outputs overrides, else verify's."""
    a = {"": atol, **{o.name: o.atol for o in io.outputs if o.atol is not None}}
    r = {"": rtol, **{o.name: o.rtol for o in io.outputs if o.rtol is not None}}
    return a, r


def error_ledger(runners: Sequence[Any], feeds: Sequence[tuple[str, dict]], boundaries: Sequence[tuple[int, int]],
                 atol: dict[str, float], rtol: dict[str, float]) -> list[dict]:
    """Run every runner on the same labelled feeds and compare the given (reference, candidate) pairs.

    One row per boundary and output: max abs/rel error over all feeds, the feed where it was worst,
    and pass/fail by Polygraphy's element-wise check with that output's tolerance. Integer and bool
    outputs are compared exactly.
    """
    labels = [label for label, _ in feeds]
    results = Comparator.run(list(runners), data_loader=[feed for _, feed in feeds], warm_up=0)
    exact, skipped = _normalise(results)
    a = {**atol, **{n: 0.0 for n in exact}}
    r = {**rtol, **{n: 0.0 for n in exact}}
    compare = CompareFunc.simple(atol=a, rtol=r)
    with warnings.catch_warnings():  # an empty output (a static 0-size dim) makes numpy warn of an empty mean
        warnings.simplefilter("ignore", RuntimeWarning)
        accuracy = Comparator.compare_accuracy(results, comparisons=list(boundaries), compare_func=compare)
    if not hasattr(accuracy, "items"):  # polygraphy 0.53 returns one result per compare function, 0.49-0.52 one
        accuracy = accuracy[0]
    rows = []
    for (ref, cand), iterations in accuracy.items():
        for name in iterations[0]:
            per_iter = [it[name] for it in iterations]
            worst = int(np.argmax([float(x.max_absdiff) for x in per_iter]))
            max_abs = float(max(x.max_absdiff for x in per_iter))
            rows.append({
                "reference": ref, "candidate": cand, "output": name, "max_abs_error": max_abs,
                "max_rel_error": float(max(x.max_reldiff for x in per_iter)) if max_abs else 0.0,  # not 0/0
                "passed": all(bool(x) for x in per_iter), "worst_feed": labels[worst], "feeds": len(per_iter),
                "atol": a.get(name, a[""]), "rtol": r.get(name, r[""]), "exact": name in exact,
            })
    rows += [{"reference": results[0][0], "candidate": results[-1][0], "output": name, "max_abs_error": 0.0,
              "max_rel_error": 0.0, "passed": True, "worst_feed": "-", "feeds": 0, "atol": 0.0, "rtol": 0.0,
              "exact": False, "compared": False, "note": "not a tensor (a sequence or map): not compared"}
             for name in sorted(skipped)]
    return rows


def _normalise(results) -> tuple[set[str], set[str]]:
    """Make outputs comparable: integers/bools as int64 (compared exactly), non-tensor outputs (sequences,
    maps) set aside, and NaN/inf that every runner produces at the same place (sqrt of a negative random
    input, say) zeroed, so that only disagreements count. Returns (exact outputs, outputs set aside)."""
    exact, skipped = set(), set()
    for _, iterations in results:
        for it in iterations:
            for name in list(it.keys()):
                value = np.asarray(it[name]) if not isinstance(it[name], (list, dict)) else None
                if value is None or value.dtype == object:
                    skipped.add(name)
                    del it.dct[name]
                elif value.dtype.kind in "biu":
                    exact.add(name)
                    it[name] = value.astype(np.int64)  # bools cannot be subtracted
    for index in range(min(len(iterations) for _, iterations in results)):
        for name in results[0][1][index].keys():
            arrays = [iterations[index][name] for _, iterations in results if name in iterations[index]]
            if len({a.shape for a in arrays}) != 1 or arrays[0].dtype.kind != "f":
                continue
            same = np.ones(arrays[0].shape, bool)
            for a in arrays:
                same &= ~np.isfinite(a) & (np.isnan(a) == np.isnan(arrays[0])) & \
                    (np.nan_to_num(a, nan=0) == np.nan_to_num(arrays[0], nan=0))
            if same.any():
                for _, iterations in results:
                    if name in iterations[index]:
                        iterations[index][name] = np.where(same, 0, iterations[index][name]).astype(arrays[0].dtype)
    return exact, skipped
