"""Build stage: the cleaned ONNX model into an engine with the chosen backend."""

from __future__ import annotations

from compiler.backends import choose_backend
from compiler.backends.tensorrt import has_qdq
from compiler.backends.tensorrt_plan import reproducers
from compiler.cache import cache_root
from compiler.stages import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    choice = choose_backend(ctx.cfg.engine)
    ctx.log.info("engine backend: %s (%s)", choice.name, choice.reason)
    if choice.name == "tensorrt":
        from compiler.backends.tensorrt import build
    else:
        from compiler.backends.onnxruntime import build
    model = ctx.inputs.get("quantize", ctx.inputs["surgery"])  # the QDQ model when quantizing
    artifact, info = build(model, ctx.work_dir, ctx.cfg)
    # the same engine outside the compiler, whichever backend ran here
    commands = reproducers(ctx.cfg, model.name, has_qdq=has_qdq(model), cache_dir=cache_root(ctx.cfg.cache))
    return StageResult(artifact, {"backend": choice.name, "reason": choice.reason, "reproducers": commands, **info})
