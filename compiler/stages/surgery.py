"""Surgery stage: the recipe's ordered pass list over model.onnx, every step accounted for."""

from __future__ import annotations

import gc
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, List, Mapping, Sequence

from compiler import weights
from compiler.errors import StageError
from compiler.heavy import onnx
from compiler.onnx_files import byte_size, has_external_data, save_model
from compiler.passes import Noted, parse_pass_list, shape_check
from compiler.stages import StageContext, StageResult
from compiler.stages.export import checked_model_info
from compiler.weights import Spill, inline, is_external, spill, tensors

if TYPE_CHECKING:
    from compiler.iospec import IOSpec

# The best general-purpose cleaning we have, in the order that lets each pass feed the next.
DEFAULT_PASSES = ["fold_constants", "fold_shape_computations", "fold_constants", "eliminate_noops",
                  "simplify_reshape", "fold_transpose_into_gemm", "merge_transposes_reshapes", "fuse_batchnorm",
                  "fold_mul_add", "fuse_pad_into_conv", "eliminate_noops", "fold_constants", "dedup_constants",
                  "merge_duplicate_nodes", "fuse_parallel_matmuls", "cleanup", "toposort"]


@dataclass
class SurgeryConfig:
    passes: List[Any] = field(default_factory=lambda: list(DEFAULT_PASSES))


def _histogram_delta(before: Counter, after: Counter) -> dict[str, int]:
    return {op: after[op] - before[op] for op in sorted(set(before) | set(after)) if after[op] != before[op]}


SKIPPED_FOR_ENGINE = "left out for this engine (onnxruntime's CUDA attention fusion needs q, k and v as three " \
    "projections; EnginePlan.surgery_key)"


def apply_passes(model, passes_cfg, log=None, skip: tuple[str, ...] | list[str] = (),
                 shapes: Sequence[Mapping[str, Sequence[int]]] = (),
                 spill_into: Spill | None = None) -> tuple[Any, list[dict]]:
    """Run the pass list, less the passes the engine's plan skips; return the new model and one record per pass.
    `shapes`: concrete input shapes (the profile's min and max) at which every shape constant a pass wrote must
    hold (passes/shape_check.py). `spill_into`: where each pass's large new tensors go as soon as it has run."""
    from omegaconf import OmegaConf


    raw = OmegaConf.to_container(passes_cfg, resolve=True) if OmegaConf.is_config(passes_cfg) else passes_cfg
    calls, problems = parse_pass_list(raw)
    assert not problems, problems  # lint has reported these already
    records = []
    guard, shape_guard = ControlFlowGuard(model), ShapeGuard(model, shapes)
    gc.freeze()  # everything alive now (torch, TensorFlow, ...) is left out of the per-pass collections below
    try:
        for call in calls:
            if call.name in skip:
                nodes = len(model.graph.node)
                records.append({"index": call.index, "pass": call.name, "nodes_before": nodes, "nodes_after": nodes,
                                "op_delta": {}, "seconds": 0.0, "skipped": SKIPPED_FOR_ENGINE})
                continue
            result, record = _apply_one(call, model)
            spill(result, spill_into)
            broken = guard.broken(result)
            wrong_shape = None if broken else shape_guard.wrong(result)
            if broken:  # the pass broke a valid control-flow model: its result is dropped, the model kept as it was
                record.update(skipped=f"kept the model as it was: the result broke its control flow ({broken})",
                              nodes_after=record["nodes_before"], op_delta={})
            elif wrong_shape:  # the pass wrote a shape no runtime accepts: dropped before it can reach the build
                record.update(skipped=f"kept the model as it was: the result wrote an invalid shape ({wrong_shape})",
                              nodes_after=record["nodes_before"], op_delta={})
                if log:
                    log.warning("pass %s: result dropped: it wrote an invalid shape: %s", call.name, wrong_shape)
            else:
                model = result
            records.append(record)
            if log:
                log.info("pass %-20s nodes %d -> %d", call.name, record["nodes_before"], record["nodes_after"])
    finally:
        gc.unfreeze()
    return model, records


CONTROL_FLOW = ("If", "Loop", "Scan")
GUARD_MAX_BYTES = 512 << 20   # above this, a model is not reloaded after every pass


class ControlFlowGuard:
    """Every pass either handles If/Loop/Scan bodies or leaves them alone; this checks that it did. For a model
    with control flow that onnxruntime loads, each pass's result must load too (onnxruntime type-checks every
    branch and body with the outer scope), or it is dropped and the report says so. It must load as the file
    did both as written and fully optimised: an engine build re-infers every branch's types after its own
    rewrites, and a declared shape a pass made stale fails only there."""

    def __init__(self, model: Any):
        checked = _has_control_flow(model) and byte_size(model) < GUARD_MAX_BYTES
        self.levels = tuple(level for level in GUARD_LEVELS if checked and _load_error(model, level) is None)
        self.active = "disable" in self.levels

    def broken(self, model: Any) -> str | None:
        if not self.active:
            return None
        return next((error for error in (_load_error(model, level) for level in self.levels) if error), None)


class ShapeGuard:
    """Every pass leaves the shape-carrying constants valid at the profile's input shapes (passes/shape_check.py).
    Checked only after a pass that changed one, and only for problems the model before it did not have: a file's
    own oddities are the file's."""

    def __init__(self, model: Any, shapes: Sequence[Mapping[str, Sequence[int]]]):
        self.check, self.shapes = shape_check, list(shapes)
        self.seen = shape_check.fingerprint(model)
        self.known = shape_check.problems(model, self.shapes)

    def wrong(self, model: Any) -> str | None:
        """The problems `model` adds, or None: then it is the model the next pass is judged against."""
        seen = self.check.fingerprint(model)
        if seen == self.seen:
            return None
        new = sorted(self.check.problems(model, self.shapes) - self.known)
        if new:
            return "; ".join(new[:3]) + (f"; and {len(new) - 3} more" if len(new) > 3 else "")
        self.seen = seen  # its problems are all known ones: nothing to add
        return None


def _has_control_flow(model: Any) -> bool:
    """An If/Loop/Scan in the graph or in a model-local function (onnxruntime inlines those on load)."""
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    return any(n.op_type in CONTROL_FLOW for n in nodes)


GUARD_LEVELS = ("disable", "all")


def _load_error(model: Any, level: str = "disable") -> str | None:
    import onnxruntime as ort


    if any(is_external(t) for t in tensors(model)):  # onnxruntime loads bytes without their weights' folder
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        inline(copy)
        model = copy

    from compiler.backends.onnxruntime import without_prepacking

    options = without_prepacking()
    options.graph_optimization_level = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    options.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        text = " ".join(str(exc).split())
        return text[:300]
    return None


def _apply_one(call, model) -> tuple[Any, dict]:
    """One pass: the new model and its record."""
    before = Counter(n.op_type for n in model.graph.node)
    started = time.perf_counter()
    try:
        model = call.load()(model, **call.args)
        notes = list(model.notes) if isinstance(model, Noted) else []
        model = model.model if isinstance(model, Noted) else model
        # graphsurgeon graphs are reference cycles: without this, each pass's copy of the weights stays. Only
        # objects made since the freeze are scanned, so this costs milliseconds even beside a loaded torch
        gc.collect()
    except Exception as exc:
        raise StageError("surgery", f"pass surgery.passes[{call.index}] '{call.name}' failed: {exc}",
                         fix="remove or move this pass, or change its arguments") from exc
    after = Counter(n.op_type for n in model.graph.node)
    return model, {"index": call.index, "pass": call.name, "nodes_before": sum(before.values()),
                   "nodes_after": sum(after.values()), "op_delta": _histogram_delta(before, after),
                   "seconds": time.perf_counter() - started, **({"notes": notes} if notes else {})}


def _extreme_shapes(io: IOSpec) -> list[dict[str, tuple[int, ...]]]:
    """The inputs' shapes at each profile's min and max, each distinct set once."""
    found: list[dict[str, tuple[int, ...]]] = []
    for profile in range(len(io.profiles)) if io is not None else ():
        for position in ("min", "max"):
            shapes = io.shapes(profile, position)
            if shapes not in found:
                found.append(shapes)
    return found


def run(ctx: StageContext) -> StageResult:
    model = weights.load(ctx.inputs["export"])  # weights stay on disk; passes read the ones they need
    spill = ctx.work_dir / ".spill"
    with weights.spilling_to(spill) as into:
        model, records = apply_passes(model, ctx.cfg.surgery.passes, ctx.log, skip=ctx.plan.surgery_key().get("skip", ()),
                                      shapes=_extreme_shapes(ctx.io), spill_into=into)
        out = ctx.work_dir / "model.clean.onnx"
        # weights beside the model stay beside it (and must, over 2 GB); each tensor is written once
        save_model(model, out, external=True if has_external_data(ctx.inputs["export"]) else None)
    shutil.rmtree(spill, ignore_errors=True)
    try:  # the compiler's own exports pass strict shape inference; a foreign file need only keep what it had
        info = checked_model_info(out, strict=ctx.cfg.framework.value != "onnx")
        if info["checker"] != "passed" and ctx.input_info.get("export", {}).get("checker", "passed") == "passed":
            raise ValueError(info["checker"].split(": ", 1)[-1])  # surgery made the checker object: a broken graph
    except Exception as exc:
        raise StageError("surgery", f"the cleaned model is not valid ONNX: {exc}",
                         fix="check the custom passes in surgery.passes") from exc
    return StageResult("model.clean.onnx", {**info, "passes": records})
