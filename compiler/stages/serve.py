"""Serve stage: a verified engine as a Triton model repository, `triton/<model>/`:

- `config.pbtxt`: the engine's backend (`onnxruntime_onnx`, or `tensorrt_plan` for a TensorRT engine) with its
  runtime settings, from the IO spec and the EnginePlan (serve/triton_config.py);
- `1/`: the engine file (`model.onnx` or `model.plan`) with its weights and runtime settings;
- `configs/python_onnxruntime.pbtxt` and `1/model.py`: the twin, the same model on Triton's Python backend
  running onnxruntime with those settings (`--model-config-name=python_onnxruntime`);
- `warmup/`: warm-up data of the inputs that random data would put out of range.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx

from compiler.cache import artifact_files, runtime_file
from compiler.errors import StageError
from compiler.serve.settings import resolve
from compiler.stages import StageContext, StageResult

REPOSITORY = "triton"


def run(ctx: StageContext) -> StageResult:
    from compiler.backends.onnxruntime import read_runtime
    from compiler.serve import triton_config as tc

    settings = resolve(ctx.cfg.serve, ctx.io, ctx.plan, ctx.recipe)
    engine = ctx.inputs["build"]
    source = ctx.inputs.get("quantize") or ctx.inputs["surgery"]   # the ONNX the engine was built from
    served_onnx = engine if engine.suffix == ".onnx" else source
    served = onnx.load(str(served_onnx), load_external_data=False)   # once: its IO is all that is read
    if settings.max_batch_size:
        reason = tc.batch_problem(served, source, ctx.io, settings)
        if reason and ctx.cfg.serve.max_batch_size != "auto":
            raise StageError("serve", f"serve.max_batch_size={settings.max_batch_size}: Triton cannot batch this "
                             f"model: {reason}", fix="serve.max_batch_size=0 (full dims), or auto")
        if reason:
            settings = settings.unbatched(reason)
    try:
        inputs, outputs = tc.engine_io(served, ctx.io, source)
    except tc.ConfigError as exc:
        raise StageError("serve", str(exc)) from None
    runtime = read_runtime(engine)
    real = tc.model_config(settings, ctx.io, ctx.plan, runtime, inputs, outputs)

    model_dir = ctx.work_dir / REPOSITORY / settings.name
    version = model_dir / "1"
    version.mkdir(parents=True)
    engine_name = "model.plan" if ctx.plan.backend == "tensorrt" else "model.onnx"
    _copy_artifact(engine, version, engine_name)
    twin_file = engine_name
    if served_onnx is not engine:  # a TensorRT plan: the twin serves the ONNX it was built from
        twin_file = "model.onnx"
        _copy_artifact(served_onnx, version, twin_file)
    runtime_name = runtime_file(engine).name if runtime is not None else None
    twin = tc.twin_config(real, twin_file, runtime_name if served_onnx is engine else None)
    (model_dir / "config.pbtxt").write_text(tc.to_text(real))
    (model_dir / "configs").mkdir()
    (model_dir / "configs" / f"{tc.TWIN_CONFIG}.pbtxt").write_text(tc.to_text(twin))
    shutil.copyfile(Path(tc.__file__).with_name("twin_model.py"), version / tc.TWIN_MODEL)
    data = tc.warmup_data(settings, ctx.io) if settings.warmup else {}
    if data:
        (model_dir / tc.WARMUP_FOLDER).mkdir()
        for name, raw in data.items():
            (model_dir / tc.WARMUP_FOLDER / name).write_bytes(raw)
    for note in settings.notes:
        ctx.log.info("serve: %s", note)
    return StageResult(REPOSITORY, {
        "target": "triton", "model_name": settings.name, "repository": REPOSITORY,
        "config": f"{REPOSITORY}/{settings.name}/config.pbtxt",
        "twin_config": f"{REPOSITORY}/{settings.name}/configs/{tc.TWIN_CONFIG}.pbtxt",
        "platform": real.platform, "engine_file": f"1/{engine_name}", "max_batch_size": settings.max_batch_size,
        "dynamic_batching": settings.queue_delay_us is not None, "instance_kind": "KIND_GPU" if settings.gpu
        else "KIND_CPU", "instances": settings.instances, "warmup": [w[0] for w in tc.warmup_requests(settings, ctx.io)]
        if settings.warmup else [], "inputs": [t.__dict__ for t in inputs], "outputs": [t.__dict__ for t in outputs],
        "notes": list(settings.notes)})


def _copy_artifact(model: Path, folder: Path, name: str) -> None:
    """A model file under its served name, with its weights files and runtime settings (names kept: the model's
    external-data locations and the twin's parameters name them)."""
    first, *rest = artifact_files(model)
    shutil.copyfile(first, folder / name)
    for file in rest:
        shutil.copyfile(file, folder / file.name)
