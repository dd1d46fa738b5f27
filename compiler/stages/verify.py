"""Verify stage: error ledger across every artifact, accuracy, latency, and the recipe's gates."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional

from compiler.stages import StageContext, StageResult


@dataclass
class LatencyConfig:
    batch_sizes: List[int] = field(default_factory=lambda: [1, 32])
    iterations: int = 50      # at most this many timed calls per model and batch size...
    warmup: int = 5
    max_seconds: float = 0.5  # ...stopping early once this much time is spent (at least 10 calls)


@dataclass
class VerifyConfig:
    atol: float = 1.0e-4
    rtol: float = 1.0e-3
    max_accuracy_drop: float = 0.5        # top-1 percentage points, engine vs framework model
    min_accuracy: Optional[float] = None  # optional floor for the engine's top-1 (0..1)
    samples: int = 64                     # real test samples (plus as many random ones) in the ledger
    latency: LatencyConfig = field(default_factory=LatencyConfig)


if TYPE_CHECKING:
    import numpy as np


def engine_layout(cfg, x: "np.ndarray") -> "np.ndarray":
    """Samples in the exported model's input layout (channels last only for export.input_layout=nhwc)."""
    import numpy as np

    if cfg.export.input_layout.value == "nhwc" and x.ndim == 4:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x


def _top1(runner, input_name: str, output_name: str, x: "np.ndarray", y: "np.ndarray", batch: int = 256) -> float:
    import numpy as np

    correct = 0
    for i in range(0, len(x), batch):
        out = runner.infer({input_name: np.ascontiguousarray(x[i:i + batch])}, check_inputs=False)[output_name]
        correct += int((np.asarray(out).argmax(1) == y[i:i + batch]).sum())
    return correct / max(1, len(x))


def _samples(cfg):
    """(test inputs in the engine's layout, their labels or None) — random inputs when there is no data."""
    import numpy as np

    from compiler.data.sources import load_dataset

    if cfg.data.source.value == "none":
        rng = np.random.default_rng(cfg.seed)
        return rng.standard_normal((max(cfg.verify.samples, 32), *cfg.model.input.shape)).astype(np.float32), None
    data = load_dataset(cfg.data, cfg.model.input.shape, cfg.seed)
    return engine_layout(cfg, data.x_test), data.y_test


def _runners(ctx: StageContext, backend: str, input_shape: list[int]):
    """(runners, artifact names, ledger boundaries, index of the reference model)."""
    from compiler.verify.runners import CallableRunner, engine_runner, framework_predictor, onnx_runner

    cfg, spec = ctx.cfg, ctx.cfg.model
    artifacts = [("model.onnx", ctx.inputs["export"]), ("model.clean.onnx", ctx.inputs["surgery"])]
    if "quantize" in ctx.inputs:  # the int8 or fp16 model is a stage of its own in the ledger
        artifacts.append((ctx.inputs["quantize"].name, ctx.inputs["quantize"]))
    runners = [onnx_runner(name, path, cfg.engine) for name, path in artifacts]
    runners.append(engine_runner(backend, ctx.inputs["build"], cfg.engine))
    names = [name for name, _ in artifacts] + ["engine"]
    if cfg.framework.value != "onnx":  # else the original file is the reference
        framework = CallableRunner(cfg.framework.value, framework_predictor(cfg, ctx.inputs["train"]),
                                   spec.input.name, spec.output.name, input_shape)
        runners, names = [framework, *runners], [framework.name, *names]
    chain = [(i, i + 1) for i in range(len(runners) - 1)]
    return runners, names, chain + [(0, len(runners) - 1)]


def run(ctx: StageContext) -> StageResult:
    import numpy as np

    from compiler.verify.latency import measure
    from compiler.verify.ledger import error_ledger

    cfg, vcfg = ctx.cfg, ctx.cfg.verify
    spec = cfg.model
    x_test, y_test = _samples(cfg)
    backend = ctx.results["build"]["backend"]
    runners, names, boundaries = _runners(ctx, backend, list(x_test.shape[1:]))

    max_batch = _engine_max_batch(cfg, backend)
    real = x_test[: min(vcfg.samples, max_batch)]
    rng = np.random.default_rng(cfg.seed)
    noise = rng.standard_normal(real.shape).astype(np.float32) * real.std() + real.mean()
    feeds = [{spec.input.name: real}, {spec.input.name: noise}]
    rows, _ = error_ledger(runners, feeds, boundaries, vcfg.atol, vcfg.rtol)
    by_runner = {r.name: n for r, n in zip(runners, names)}  # Polygraphy suffixes runner names
    for row in rows:
        row["reference"], row["candidate"] = by_runner[row["reference"]], by_runner[row["candidate"]]

    reduced = ctx.inputs["quantize"].name if "quantize" in ctx.inputs else None
    for row in rows:  # from int8/fp16 on, outputs drift by design: judged by the accuracy budget, not atol
        row["gated"] = reduced is None or names.index(row["candidate"]) < names.index(reduced)
    accuracy, latency = {}, {}
    measured = [("framework", runners[0]), ("engine", runners[-1])]
    if reduced and y_test is not None:
        with runners[names.index("model.clean.onnx")] as clean:
            accuracy["fp32"] = _top1(clean, spec.input.name, spec.output.name, x_test, y_test)
    for key, runner in measured:
        with runner:
            if y_test is not None:
                accuracy[key] = _top1(runner, spec.input.name, spec.output.name, x_test, y_test, min(256, max_batch))
            latency[key] = measure(runner, spec.input.name, x_test,
                                   [b for b in vcfg.latency.batch_sizes if b <= max_batch],
                                   vcfg.latency.iterations, vcfg.latency.warmup, vcfg.latency.max_seconds)
    if backend == "tensorrt":
        rows += _profile_shape_checks(cfg, ctx.inputs["surgery"], ctx.inputs["build"])
    end_to_end = next(r for r in rows if r["reference"] == names[0] and r["candidate"] == "engine")
    gates = _gates(vcfg, rows, accuracy)
    info = {"ledger": rows, "accuracy": accuracy, "latency_ms": latency, "gates": gates, "reference": names[0],
            "max_abs_error": {"engine": end_to_end["max_abs_error"]},
            "max_rel_error": {"engine": end_to_end["max_rel_error"]},
            "passed": all(g["passed"] for g in gates), "backend": backend,
            "ledger_inputs": {"feeds": ["test split" if y_test is not None else "random", "random"],
                              "samples_per_feed": int(len(real))}}
    (ctx.work_dir / "verify.json").write_text(json.dumps(info, indent=2))
    return StageResult("verify.json", info)


def _engine_max_batch(cfg, backend: str) -> int:
    """TensorRT engines accept batches up to their first profile's max; onnxruntime any."""
    if backend != "tensorrt":
        return 1 << 30
    from compiler.backends.tensorrt_plan import derived_profiles

    return derived_profiles(cfg)[0][cfg.model.input.name][2][0]


def _profile_shape_checks(cfg, clean_onnx, engine) -> list[dict]:
    """Run the engine at the min, opt and max shapes of every profile against the cleaned ONNX model."""
    import numpy as np

    from compiler.backends.tensorrt import runner as trt_runner
    from compiler.backends.tensorrt_plan import derived_profiles
    from compiler.verify.ledger import error_ledger
    from compiler.verify.runners import onnx_runner

    rows = []
    rng = np.random.default_rng(cfg.seed)
    for index, profile in enumerate(derived_profiles(cfg)):
        for which, position in (("min", 0), ("opt", 1), ("max", 2)):
            feed = {name: rng.standard_normal(shapes[position]).astype(np.float32) for name, shapes in profile.items()}
            runners = [onnx_runner("model.clean.onnx", clean_onnx, cfg.engine), trt_runner(engine, index)]
            found, _ = error_ledger(runners, [feed], [(0, 1)], cfg.verify.atol, cfg.verify.rtol)
            for row in found:
                row.update(reference="model.clean.onnx", candidate=f"engine[profile {index} {which}]")
            rows += found
    return rows


def _gates(vcfg, rows: list[dict], accuracy: dict) -> list[dict]:
    gates = [{"name": f"{r['reference']} -> {r['candidate']} [{r['output']}]", "passed": r["passed"],
              "detail": f"max abs {r['max_abs_error']:.3g}, max rel {r['max_rel_error']:.3g} "
                        f"(atol {vcfg.atol:g}, rtol {vcfg.rtol:g})"} for r in rows if r.get("gated", True)]
    if not accuracy:
        return gates  # no labelled data: the ledger is the whole check
    reference = "fp32" if "fp32" in accuracy else "framework"  # int8: against the fp32 model
    drop = (accuracy[reference] - accuracy["engine"]) * 100
    gates.append({"name": f"accuracy drop vs {reference}", "passed": drop <= vcfg.max_accuracy_drop,
                  "detail": f"{drop:.2f} points (budget {vcfg.max_accuracy_drop:g})"})
    if vcfg.min_accuracy is not None:
        gates.append({"name": "minimum accuracy", "passed": accuracy["engine"] >= vcfg.min_accuracy,
                      "detail": f"engine {accuracy['engine']:.4f} (floor {vcfg.min_accuracy:g})"})
    return gates
