"""The latency stage: the engine and its reference timed now, alone on this machine (verify/latency.py).

Never cached, and never run while other work runs: a figure measured by another run, under another load or on
another machine is not this run's. The pipeline runs it last, outside the work lock the other stages hold."""

from __future__ import annotations

import json

from compiler.stages import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    from compiler.verify.latency import measure_now

    ctx.log.info("latency: waiting until no other job computes, then timing")
    latency, conditions = measure_now(ctx.cfg, ctx.plan, ctx.io, ctx.inputs)
    info = {"latency": latency, "conditions": conditions}
    (ctx.work_dir / "latency.json").write_text(json.dumps(info, indent=2))
    return StageResult("latency.json", info)
