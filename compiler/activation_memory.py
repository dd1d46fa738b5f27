"""What an ONNX file's activations take at its max input shapes, and defaulted dims scaled down until they fit.

The input domain probe, verification and latency all run the file at the max of every dim. A diffusion UNet at
the defaulted 128x128 latent and batch 8 runs self-attention over 16,384 tokens: tens of GiB in one tensor, and
the kernel kills the compile (exit 137) with no message. So before anything runs the file, the largest
operation's working set (its activation inputs and outputs) is estimated from onnx's shape inference at the max
shapes:

- where it would not fit, dims the recipe left to a default are halved, the one that saves most first, until it
  fits; the note names each;
- where it still would not fit, or the recipe gave the dims itself, the run is refused (exit 2) with the estimate
  and the keys to change.

The estimate is a floor of what onnxruntime holds: it keeps several tensors alive at once, and verification holds
a reference and an engine session. PEAK_FACTOR covers both; BUDGET_SHARE leaves the rest of the machine to the
weights, the framework and the other processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from compiler import dims as dim_rules
from compiler.errors import Problem
from compiler.heavy import onnx
from compiler.memory import GIB, machine_bytes
from compiler.passes._gs import static_shapes

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.onnx_io import Opened

PEAK_FACTOR = 4        # tensors alive beside the largest operation's, times the two sessions verification holds
BUDGET_SHARE = 0.5     # of the machine's memory, for the activations of a run
FLOORS = {"batch": 1, "spatial": 8, "other": 1}  # a defaulted dim is never halved below this


@dataclass(frozen=True)
class Largest:
    """The operation whose activations take most memory at some input shapes."""

    op: str
    name: str
    bytes: int

    def peak(self) -> int:
        return self.bytes * PEAK_FACTOR


def largest_operation(model: Any, shapes: Mapping[str, Sequence[int]]) -> Largest | None:
    """The node whose activation inputs and outputs take most bytes with the graph inputs at `shapes`;
    tensors whose shape inference leaves unknown count as nothing. None for a graph inference cannot read."""

    # symbolic: onnx's own inference loses the token count of an attention built by Reshape(b, -1, ...)
    known = static_shapes(model, shapes, symbolic=True)
    if known is None:
        return None
    sizes = {name: math.prod(dims) * (onnx.helper.tensor_dtype_to_np_dtype(elem).itemsize
                                      if elem != onnx.TensorProto.STRING else 8)
             for name, (dims, elem) in known.items() if elem}
    weights = {t.name for t in model.graph.initializer}
    best: Largest | None = None
    for node in model.graph.node:
        held = sum(sizes.get(t, 0) for t in {*node.input, *node.output} if t and t not in weights)
        if best is None or held > best.bytes:
            best = Largest(node.op_type, node.name or node.output[0], held)
    return best


@dataclass
class Fit:
    """What fitting the dims to the machine did: dims changed (name -> [min, opt, max]), notes, and the estimate
    that remains too large (None when it fits)."""

    changed: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    too_large: Largest | None = None


def fit_dims(model: Any, shapes_at: Any, dims: Mapping[str, Sequence[int]], defaulted: Mapping[str, str],
             budget: int | None = None) -> Fit:
    """Halve defaulted dims (`defaulted`: name -> kind, batch/spatial/other) until the largest operation's peak at
    the max shapes fits `budget` (default: BUDGET_SHARE of this machine). `shapes_at(dims)` gives the inputs'
    max shapes for a dims mapping."""
    budget = int(machine_bytes() * BUDGET_SHARE) if budget is None else budget
    current = {name: list(r) for name, r in dims.items()}
    largest = largest_operation(model, shapes_at(current))
    if largest is None or largest.peak() <= budget:
        return Fit()
    first = largest
    while largest.peak() > budget:
        options = []
        for name, kind in defaulted.items():
            low, opt, high = current[name]
            if high // 2 < FLOORS.get(kind, 1):
                continue
            halved = {**current, name: [min(low, high // 2), min(opt, high // 2), high // 2]}
            found = largest_operation(model, shapes_at(halved))
            if found is not None:
                options.append((found.peak(), kind == "batch", -high, name, halved, found))
        if not options:
            break
        # the smallest peak; on a tie, an image's size before its batch, and its larger side first (square-ish)
        *_, current, largest = min(options, key=lambda o: o[:4])
    changed = {name: r for name, r in current.items() if r != list(dims[name])}
    if largest.peak() > budget:
        return Fit(changed, [], largest)
    said = ", ".join(f"{name} {list(dims[name])} -> {r}" for name, r in changed.items())
    keys = " ".join(f"++model.dims.{name}=[min,opt,max]" for name in changed)
    return Fit(changed, [f"defaulted dims scaled down to fit this machine's memory: {said} (at the defaults, "
                         f"{first.op} '{first.name}' alone holds {first.bytes / GIB:.1f} GiB, an estimated peak of "
                         f"{first.peak() / GIB:.1f} GiB against {budget / GIB:.1f} GiB allowed; now "
                         f"{largest.peak() / GIB:.2f} GiB); set {keys} to choose"])


def too_large_message(largest: Largest, budget: int | None = None) -> str:
    budget = int(machine_bytes() * BUDGET_SHARE) if budget is None else budget
    return (f"at the max of its dims, {largest.op} '{largest.name}' alone holds {largest.bytes / GIB:.1f} GiB of "
            f"activations: an estimated peak of {largest.peak() / GIB:.1f} GiB, and this machine's "
            f"{machine_bytes() / GIB:.0f} GiB allow {budget / GIB:.1f} GiB")


def fit_recipe(cfg: DictConfig, opened: Opened) -> tuple[list[str], Any]:
    """For an ONNX recipe: dims that fit this machine, before the probe runs the file at them. Changes only
    dims `opened` lists as defaulted (in cfg.model.dims, as the probe does). Returns (notes, Problem or None)."""
    from pathlib import Path


    from compiler.recipe.edits import set_dims

    model = onnx.load(str(Path(cfg.model.path).expanduser()), load_external_data=False)
    dims = {name: list(r) for name, r in cfg.model.dims.items() if not isinstance(r, str)}
    relations = {name: r for name, r in cfg.model.dims.items() if isinstance(r, str)}

    def shapes_at(sizes: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
        maxima = {name: r[2] for name, r in dim_rules.resolve({**sizes, **relations}).items()}
        return {i.name: [d if isinstance(d, int) else maxima[str(d)] for d in i.shape]
                for i in cfg.model.inputs if i.shape is not None}

    defaulted = {name: kind for name, kind in opened.dims.items() if name in dims}
    fit = fit_dims(model, shapes_at, dims, defaulted)
    set_dims(cfg, fit.changed)
    if fit.too_large is None:
        return fit.notes, None
    used = sorted({str(d) for i in cfg.model.inputs if i.shape is not None for d in i.shape if not isinstance(d, int)})
    return [], Problem("model.dims", too_large_message(fit.too_large), {d: list(cfg.model.dims[d]) for d in used
                                                                       if d in dims},
                       "max dims whose largest operation fits",
                       fix="lower the max of " + ", ".join(f"model.dims.{d}" for d in used if d in dims)
                           + " (++model.dims.NAME=[min,opt,max])")
