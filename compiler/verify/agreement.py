"""The agreement gate: reduced precision judged against the strict-fp32 engine, per output, when no labels exist.

Three documented metrics over the verification inputs, every feed pooled:
- relative L2 error  ||candidate - reference|| / ||reference||            (at most `rel_l2`)
- cosine similarity  <candidate, reference> / (||candidate|| ||reference||) (at least `cosine`)
- argmax agreement   share of rows whose last-axis argmax is the same      (at least `argmax`), for class-like
  outputs only: float, rank >= 2, a last axis of 2 or more.
Budgets default by precision (DEFAULT_BUDGETS); `verify.agreement.*` overrides them for every output and
`model.outputs[].rel_l2/cosine/argmax` for one. The `fallback: auto` search uses the same judgement.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from compiler.verify.config import AgreementConfig


METRICS = ("rel_l2", "cosine", "argmax")
# what each reduced precision keeps of an fp32 model's outputs, on outputs of O(1) magnitude: tf32 and fp16 round
# to a 10-bit mantissa, bf16 to 7; int8/fp8 quantize activations to 8 bits
DEFAULT_BUDGETS = {
    "tf32": {"rel_l2": 1e-2, "cosine": 0.9999, "argmax": 0.9},
    "fp16": {"rel_l2": 1e-2, "cosine": 0.9999, "argmax": 0.9},
    "bf16": {"rel_l2": 5e-2, "cosine": 0.998, "argmax": 0.85},
    "int8": {"rel_l2": 0.2, "cosine": 0.98, "argmax": 0.8},
    "fp8": {"rel_l2": 0.2, "cosine": 0.98, "argmax": 0.8},
    "int4": {"rel_l2": 0.2, "cosine": 0.98, "argmax": 0.8},
}


def budgets(precision: str, agreement_cfg: AgreementConfig, outputs: Sequence[Any]) -> dict[str, dict[str, float]]:
    """Per output name ("" for the default) -> metric -> budget."""
    base = dict(DEFAULT_BUDGETS.get(precision, DEFAULT_BUDGETS["fp16"]))
    for metric in METRICS:
        value = getattr(agreement_cfg, metric, None) if agreement_cfg is not None else None
        if value is not None:
            base[metric] = float(value)
    out = {"": base}
    for o in outputs:
        own = {m: float(getattr(o, m)) for m in METRICS if getattr(o, m, None) is not None}
        if own:
            out[o.name] = {**base, **own}
    return out


def class_like(x: np.ndarray) -> bool:
    return x.dtype.kind == "f" and x.ndim >= 2 and x.shape[-1] >= 2


def metrics(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, Optional[float]]:
    """The three metrics of one output over several feeds (pooled). Non-finite values where the reference has
    them too are left out, as the ledger does."""
    ref = np.concatenate([np.asarray(r, np.float64).ravel() for r in reference])
    cand = np.concatenate([np.asarray(c, np.float64).ravel() for c in candidate])
    keep = np.isfinite(ref)
    ref, cand = ref[keep], cand[keep]
    if not np.isfinite(cand).all():
        return {"rel_l2": float("inf"), "cosine": -1.0, "argmax": _argmax(reference, candidate)}
    ref_norm, cand_norm = float(np.linalg.norm(ref)), float(np.linalg.norm(cand))
    diff = float(np.linalg.norm(cand - ref))
    rel = diff / ref_norm if ref_norm else (0.0 if diff == 0 else float("inf"))
    cos = float(ref @ cand) / (ref_norm * cand_norm) if ref_norm and cand_norm else (1.0 if diff == 0 else 0.0)
    return {"rel_l2": rel, "cosine": cos, "argmax": _argmax(reference, candidate)}


def _argmax(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> Optional[float]:
    if not all(class_like(np.asarray(r)) for r in reference):
        return None
    same = [np.argmax(r, -1) == np.argmax(c, -1) for r, c in zip(reference, candidate)]
    return float(np.mean(np.concatenate([s.ravel() for s in same])))


def judge(values: Mapping[str, Optional[float]], budget: Mapping[str, float]) -> dict[str, bool]:
    """metric -> within its budget (a metric that does not apply passes)."""
    return {"rel_l2": values["rel_l2"] <= budget["rel_l2"],
            "cosine": values["cosine"] >= budget["cosine"],
            "argmax": values["argmax"] is None or values["argmax"] >= budget["argmax"]}


def compare(reference_runs: Sequence[Mapping[str, np.ndarray]], candidate_runs: Sequence[Mapping[str, np.ndarray]],
            budget_by_output: Mapping[str, Mapping[str, float]]) -> list[dict]:
    """One row per float output: its metrics, budgets and whether each holds. Integer outputs are the ledger's
    (compared exactly); they are not part of this gate."""
    rows = []
    for name in reference_runs[0]:
        refs = [np.asarray(run[name]) for run in reference_runs]
        if refs[0].dtype.kind != "f" or name not in candidate_runs[0]:
            continue
        cands = [np.asarray(run[name]) for run in candidate_runs]
        values = metrics(refs, cands)
        budget = dict(budget_by_output.get(name, budget_by_output[""]))
        held = judge(values, budget)
        rows.append({"output": name, **values, "budget": budget, "held": held, "passed": all(held.values())})
    return rows


def score(rows: Sequence[dict]) -> float:
    """One number for the fallback search, higher is better: the worst output's relative L2 error as a share of
    its budget, negated (>= -1 when every rel_l2 budget holds)."""
    if not rows:
        return 0.0
    return -max(r["rel_l2"] / r["budget"]["rel_l2"] if r["budget"]["rel_l2"] else float("inf") for r in rows)


def describe(row: dict) -> str:
    parts = [f"rel L2 {row['rel_l2']:.3g} (<= {row['budget']['rel_l2']:g})",
             f"cosine {row['cosine']:.6f} (>= {row['budget']['cosine']:g})"]
    if row["argmax"] is not None:
        parts.append(f"argmax agreement {row['argmax']:.3f} (>= {row['budget']['argmax']:g})")
    return ", ".join(parts)
