"""Verify stage: error ledger across every artifact, accuracy, and the recipe's gates (latency: verify/latency.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, List, Optional

from compiler.backends.tensorrt import runner as trt_runner
from compiler.errors import InputDomainError, describe
from compiler.frameworks.onnx.precision import computed_precision
from compiler.heavy import np, onnx
from compiler.iospec import slice_batch
from compiler.stages import StageContext, StageResult
from compiler.verify.config import AgreementConfig
from compiler.verify.feeds import generated_feeds, samples
from compiler.verify.kv_cache import step_feeds


@dataclass
class LatencyConfig:
    """Measured after every compile, cached stages or not, alone on the machine (machine_lock.py)."""

    batch_sizes: List[int] = field(default_factory=lambda: [1, 32])
    iterations: int = 50      # at most this many timed calls per model and batch size...
    warmup: int = 5
    warmup_seconds: float = 0.1   # ...and at least this long: thread pools and caches settle in ~0.1 s
    # ...stopping early once this much time is spent (at least 10 calls): 4 figures of cnn_torch cost under 1.5 s
    max_seconds: float = 0.25
    # timing windows in which other processes used > 5 % of the CPU are timed again, up to this many tries
    # (the quietest kept); after a figure that found no quiet window, one each (verify/latency.py: QuietWindows)
    quiet_tries: int = 5
    # the framework reference's figures from an earlier run of the same reference, settings and machine (within
    # 24 h, marked with when they were measured) instead of timing it again; the engine is always timed now
    reuse_framework: bool = True


@dataclass
class VerifyConfig:
    atol: float = 1.0e-4
    rtol: float = 1.0e-3
    max_accuracy_drop: float = 0.5        # top-1 percentage points, engine vs framework model
    min_accuracy: Optional[float] = None  # optional floor for the engine's top-1 (0..1)
    samples: int = 64                     # real test samples in the ledger (plus random inputs at every profile shape)
    # the task metric: {_target_: allow-listed factory, **kwargs} returning fn(outputs by name, labels) -> float;
    # null: top-1 of model.label_output
    metric: Optional[Any] = None
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    # reduced precision without labels: agreement with the strict-fp32 engine (verify/agreement.py)
    agreement: AgreementConfig = field(default_factory=AgreementConfig)


if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec
    from compiler.plan import EnginePlan


def _runners(ctx: StageContext):
    """(runners, artifact names, ledger boundaries)."""
    from compiler.verify.runners import CallableRunner, engine_runner, framework_predictor, onnx_runner

    cfg, plan = ctx.cfg, ctx.plan
    artifacts = [("model.onnx", ctx.inputs["export"]), ("model.clean.onnx", ctx.inputs["surgery"])]
    if "quantize" in ctx.inputs and ctx.input_info["quantize"].get("not_measured") is None:
        artifacts.append((ctx.inputs["quantize"].name, ctx.inputs["quantize"]))  # the converted model, in the ledger
    runners = [onnx_runner(name, path, plan, "disable" if i < 2 else _converted_level(plan), timed=False)
               for i, (name, path) in enumerate(artifacts)]
    runners.append(engine_runner(plan, ctx.inputs["build"]))
    names = [name for name, _ in artifacts] + ["engine"]
    if cfg.framework.value != "onnx":  # else the original file is the reference
        framework = CallableRunner(cfg.framework.value, framework_predictor(cfg, ctx.io, ctx.inputs["train"], plan), ctx.io)
        runners, names = [framework, *runners], [framework.name, *names]
    chain = [(i, i + 1) for i in range(len(runners) - 1)]
    return runners, names, chain + [(0, len(runners) - 1)]


def _converted_level(plan: EnginePlan) -> str:
    """The optimisation level of the converted model's ledger runner. fp16 or bf16 weights on the CPU: "all", the
    one level at which onnxruntime folds the fp32 copies of the weights its CPU kernels need, once, at load (the
    casts are exact). Below it, every call casts every weight again, and all the casts run before the first layer:
    the 2.25 GiB model's fp16 file peaked at 6.0 GiB at "disable", "basic" or "extended" (3.5 without the arena),
    2.5 GiB at "all". "all" fuses as the engine does; those fusions move outputs by ~1e-6, against fp16's ~1e-3.
    Elsewhere "disable": the file as written."""
    return "all" if plan.precision in ("fp16", "bf16") and not plan.gpu else "disable"


def _feeds(cfg: DictConfig, io: "IOSpec", x_test, max_batch: int, profiles: "list[int] | None" = None,
           labelled: bool = True) -> list[tuple[str, dict]]:
    """The ledger's inputs: real test samples, then the generated ones (verify/feeds.py)."""

    feeds = []
    if x_test is not None:
        count = io.fixed_batch or min(cfg.verify.samples, max_batch)
        feeds.append(("test split" if labelled else "your inputs", slice_batch(x_test, 0, count)))
    return feeds + generated_feeds(io, np.random.default_rng(cfg.seed), profiles)


def run(ctx: StageContext) -> StageResult:
    from compiler.verify.ledger import error_ledger, tolerances
    from compiler.verify.metric import evaluate, metric_of

    cfg, vcfg, io = ctx.cfg, ctx.cfg.verify, ctx.io
    x_test, y_test = samples(cfg, io)
    plan = ctx.plan
    runners, names, boundaries = _runners(ctx)
    max_batch = io.batch_range(0)[2]
    feeds = _feeds(cfg, io, x_test, max_batch, [0] if plan.nvidia else None, labelled=y_test is not None)
    feeds += step_feeds(io, runners[0], np.random.default_rng(cfg.seed + 1))  # a KV-cache decoder's two steps
    atol, rtol = tolerances(io, vcfg.atol, vcfg.rtol)
    try:
        rows = error_ledger(runners, feeds, boundaries, atol, rtol)
    except Exception as exc:
        _raise_domain_error(ctx, feeds, exc)
        raise
    by_runner = {r.name: n for r, n in zip(runners, names)}  # Polygraphy suffixes runner names
    for row in rows:
        row["reference"], row["candidate"] = by_runner[row["reference"]], by_runner[row["candidate"]]

    # from the first reduced-precision artifact on, outputs drift by design: judged by the accuracy budget
    reduced = {"conversion": ctx.inputs["quantize"].name if "quantize" in ctx.inputs else "engine",
               "engine": "engine", None: None}[plan.reduced_at]
    inherent = _inherent_precision(ctx) if reduced is None else None
    if inherent:  # the file itself computes in int8/int4/fp16: the engine's fused kernels round differently
        reduced = "engine"
    if reduced not in names:
        reduced = "engine" if reduced else None  # a converted model onnxruntime cannot run: not in the ledger
    for row in rows:
        row["gated"] = reduced is None or names.index(row["candidate"]) < names.index(reduced)
    accuracy = {}
    metric = metric_of(cfg, io)
    eval_batch = io.fixed_batch or min(256, max_batch)
    measured = [("framework", runners[0]), ("engine", runners[-1])]
    if reduced and y_test is not None:
        with runners[names.index("model.clean.onnx")] as clean:
            accuracy["fp32"] = evaluate(_infer(clean), x_test, y_test, metric, eval_batch)
    for key, runner in measured:  # latency is not measured here: it is never cached (verify/latency.py)
        if y_test is not None:
            with runner:
                accuracy[key] = evaluate(_infer(runner), x_test, y_test, metric, eval_batch)
    if plan.nvidia:
        rows += _profile_shape_checks(cfg, io, plan, ctx.inputs["surgery"], ctx.inputs["build"], atol, rtol)
    modes = math_modes(names, plan)
    for row in rows:
        row["math_mode"] = {"reference": modes.get(row["reference"], modes["engine"]),
                            "candidate": modes.get(row["candidate"], modes["engine"])}
    end_to_end = [r for r in rows if r["reference"] == names[0] and r["candidate"] == "engine"]
    agreement = []
    if reduced and y_test is None:  # no labels: the engine against the strict-fp32 model, per output
        agreement = _agreement(cfg, io, inherent[0] if inherent else plan.precision,
                               runners[names.index("model.clean.onnx")], runners[-1], feeds)
    gates = _gates(vcfg, rows, accuracy, y_test is not None, agreement, inherent)
    info = {"ledger": rows, "accuracy": accuracy, "gates": gates, "reference": names[0], "math_modes": modes,
            "agreement": agreement, "inherent_precision": inherent,
            "max_abs_error": {"engine": max(r["max_abs_error"] for r in end_to_end)},
            "max_rel_error": {"engine": max(r["max_rel_error"] for r in end_to_end)},
            "passed": all(g["passed"] for g in gates), "backend": plan.backend,
            "ledger_inputs": {"feeds": [label for label, _ in feeds],
                              "shapes": {label: {k: list(v.shape) for k, v in feed.items()} for label, feed in feeds}},
            "metric": "top-1 of " + (cfg.model.label_output or io.output_names[0]) if cfg.verify.metric is None
            else str(cfg.verify.metric.get("_target_"))}
    if plan.cuda_provider:  # where each node runs: a CPU node or a Memcpy is a host<->device copy every call
        from compiler.backends.onnxruntime import placement

        try:
            info["placement"] = placement(ctx.inputs["build"], plan, feeds[-1][1])
        except Exception as exc:  # the profile is a report, never a gate: a failure to take it fails nothing
            info["placement"] = None
            ctx.log.warning("node placement not measured: %s", describe(exc))
    (ctx.work_dir / "verify.json").write_text(json.dumps(info, indent=2))
    return StageResult("verify.json", info)


def _raise_domain_error(ctx: StageContext, feeds: list, exc: Exception) -> None:
    """When onnxruntime refuses a generated feed that the original model refuses too, the inputs are outside
    the model's domain: exit 2 naming the feed, onnxruntime's words and the keys that declare the domain."""
    from compiler.verify.runners import onnx_runner

    reference = onnx_runner("model.onnx", ctx.inputs["export"], ctx.plan, timed=False)
    with reference:
        for label, feed in feeds:
            if label in ("test split", "your inputs"):
                continue
            try:
                reference.infer(feed, check_inputs=False)
            except Exception as refused:
                words = " ".join(str(refused).split())[:300]
                shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feed.items())
                raise InputDomainError(
                    "verify", f"onnxruntime refuses the generated inputs at '{label}' ({shapes}): {words}",
                    fix="declare the inputs' domain: the sizes each dim takes (model.dims.NAME=[min,opt,max], a "
                        "relation model.dims.total='past + seq'), integer values ('model.inputs=[{name: X, "
                        "range: [0,N]}]', a bound naming a dim, or values: [A,B]), or give real inputs "
                        "(data.source=npz data.path=...)") from exc


def math_modes(names: list[str], plan: EnginePlan) -> dict[str, str]:
    """The math mode each ledger row's model ran in: references in strict fp32, a converted model in its
    conversion's precision, the engine in the plan's."""
    modes = {name: "strict fp32" for name in names}
    for name in names:
        if name not in ("model.onnx", "model.clean.onnx", "engine") and name.startswith("model."):
            modes[name] = plan.conversion
    modes["engine"] = plan.conversion if plan.conversion != "none" else \
        (plan.precision if plan.builder_precisions else plan.math_mode.name)
    return modes


def _inherent_precision(ctx: StageContext) -> list | None:
    """[precision, the ops that say so] when an ONNX recipe's file already computes in reduced precision."""
    if ctx.cfg.framework.value != "onnx":
        return None


    found = computed_precision(onnx.load(str(ctx.inputs["export"]), load_external_data=False))
    return list(found) if found else None


def _agreement(cfg: DictConfig, io: IOSpec, precision: str, reference, engine, feeds) -> list[dict]:
    """The agreement gate's rows: the strict-fp32 cleaned model and the engine on the ledger's generated inputs
    (and the user's, with data.source=npz)."""
    from compiler.verify.agreement import budgets, compare

    outputs = []
    for runner in (reference, engine):
        with runner:
            outputs.append([dict(runner.infer(feed, check_inputs=False)) for _, feed in feeds])
    return compare(outputs[0], outputs[1], budgets(precision, cfg.verify.agreement, io.outputs))


def _infer(runner):
    return lambda feed: runner.infer(feed, check_inputs=False)


def _profile_shape_checks(cfg: DictConfig, io: IOSpec, plan: EnginePlan, clean_onnx, engine, atol, rtol) -> list[dict]:
    """TensorRT: run the engine at the min, opt and max shapes of every further profile against the cleaned model."""
    from compiler.verify.ledger import error_ledger
    from compiler.verify.runners import onnx_runner

    rows = []
    rng = np.random.default_rng(cfg.seed)
    for index in range(1, len(io.profiles)):
        feeds = [(label, io.random_feed(rng, shapes)) for label, shapes in io.check_shapes([index])]
        runners = [onnx_runner("model.clean.onnx", clean_onnx, plan, timed=False), trt_runner(engine, plan.backend, index)]
        for row in error_ledger(runners, feeds, [(0, 1)], atol, rtol):
            row.update(reference="model.clean.onnx", candidate=f"engine[profile {index}]")
            rows.append(row)
    return rows


def _gates(vcfg, rows: list[dict], accuracy: dict, labelled: bool, agreement: list[dict] = (),
           inherent: list | None = None) -> list[dict]:
    gates = [{"name": f"{r['reference']} -> {r['candidate']} [{r['output']}]", "passed": r["passed"],
              "detail": f"max abs {r['max_abs_error']:.3g}, max rel {r['max_rel_error']:.3g} at {r['worst_feed']} "
                        f"(atol {r['atol']:g}, rtol {r['rtol']:g}{', exact' if r['exact'] else ''})"}
             for r in rows if r.get("gated", True)]
    informational = [r for r in rows if not r.get("gated", True)]
    if informational:
        worst = max(informational, key=lambda r: r["max_abs_error"])
        why = (f"the file already computes in {inherent[0]} ({inherent[1]}), and the engine's fused kernels round "
               "differently from the file run op by op" if inherent else "reduced precision changes outputs by design")
        gates.append({"name": "reduced-precision outputs (informational)", "passed": True, "informational": True,
                      "detail": f"not gated by atol/rtol: {why} (max abs "
                                f"{worst['max_abs_error']:.3g} at {worst['reference']} -> {worst['candidate']} "
                                f"[{worst['output']}]); " + ("the accuracy budget against the fp32 model is the gate"
                                                              if labelled else "agreement with " + (
                                                                  "the file run as written" if inherent else
                                                                  "strict fp32") + " is the gate")})
    from compiler.verify.agreement import describe

    gates += [{"name": f"agreement with strict fp32 [{a['output']}]", "passed": a["passed"], "detail": describe(a)}
              for a in agreement]
    if not labelled:
        gates.append({"name": "accuracy", "passed": True,
                      "detail": "not checked: no labelled data; " +
                                ("agreement with the strict-fp32 model is the gate" if agreement
                                 else "the ledger is the whole check")})
        return gates
    reference = "fp32" if "fp32" in accuracy else "framework"  # int8: against the fp32 model
    drop = (accuracy[reference] - accuracy["engine"]) * 100
    gates.append({"name": f"accuracy drop vs {reference}", "passed": drop <= vcfg.max_accuracy_drop,
                  "detail": f"{drop:.2f} points (budget {vcfg.max_accuracy_drop:g})"})
    if vcfg.min_accuracy is not None:
        gates.append({"name": "minimum accuracy", "passed": accuracy["engine"] >= vcfg.min_accuracy,
                      "detail": f"engine {accuracy['engine']:.4f} (floor {vcfg.min_accuracy:g})"})
    return gates
