"""Build stage: the cleaned (or converted) ONNX model into an engine, as the EnginePlan says."""

from __future__ import annotations

from compiler.backends.tensorrt import build
from compiler.iospec import batch_size, slice_batch
from compiler.stages import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    plan = ctx.plan
    ctx.log.info("engine backend: %s (%s)", plan.backend, plan.reason)
    model = ctx.inputs.get("quantize", ctx.inputs["surgery"])  # the converted model when there is one
    if plan.nvidia:
        artifact, info = build(model, ctx.work_dir, plan, ctx.io, _calibration(ctx) if plan.calibrator else None)
    else:
        from compiler.backends.onnxruntime import build

        artifact, info = build(model, ctx.work_dir, plan)
    return StageResult(artifact, {"backend": plan.backend, "reason": plan.reason, "model": model.name, **info})


def _calibration(ctx: StageContext) -> list[dict]:
    """TensorRT 10's calibrator: batches of the recipe's calibration data (data, seed and model are keyed)."""
    from compiler.data.sources import load_dataset

    io, cfg = ctx.io, ctx.cfg
    samples = io.to_engine(load_dataset(cfg.data, io, cfg.seed).calibration(cfg.data.calibration_size))
    batch = io.batch_range(len(io.profiles) - 1)[1]
    return [slice_batch(samples, i, i + batch) for i in range(0, batch_size(samples) - batch + 1, batch)]
