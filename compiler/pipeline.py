"""Stage order, cache look-up and the run directory.

Each stage reads its slice of the recipe and earlier artifacts from disk and writes one
artifact; the pipeline keys it, reuses it from the cache when it can, and places a copy in
the run directory. report.json, the manifest, is written last.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from compiler.backends import converted_precision, engine_key
from compiler.cache import StageCache, artifact_files, cache_root, sha256_artifact, sha256_path, stage_key, tool_versions
from compiler.errors import StageError, debug_enabled, describe
from compiler.stages import Stage, StageContext
from compiler.verify.timing import working

FRAMEWORK_TOOLS = {"torch": ("torch",), "tensorflow": ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx"), "onnx": ()}

STAGES: tuple[Stage, ...] = (
    Stage("train", "compiler.stages.train:run", ("framework", "seed", "data", "model", "train")),
    Stage("export", "compiler.stages.export:run", ("framework", "model", "export"), ("train",), ("onnx", "onnxscript")),
    Stage("surgery", "compiler.stages.surgery:run", ("surgery",), ("export",), ("onnx", "onnx-graphsurgeon", "onnxruntime")),
    Stage("quantize", "compiler.stages.quantize:run", ("framework", "seed", "data", "model", "export", "quantize",
                                                        "verify"), ("surgery",), ("onnxruntime", "onnx")),
    Stage("build", "compiler.stages.build:run", ("engine",), ("surgery", "quantize"),
          ("onnxruntime", "tensorrt", "polygraphy")),
    Stage("verify", "compiler.stages.verify:run", ("framework", "seed", "data", "model", "engine", "verify"),
          ("train", "export", "surgery", "quantize", "build"), ("onnxruntime", "polygraphy")),
)
_FRAMEWORK_STAGES = {"train", "export", "verify"}


@dataclass
class StageRecord:
    name: str
    artifact: str = ""
    path: str = ""
    sha256: str = ""
    seconds: float = 0.0          # time spent in this run (a cache hit costs only the copy)
    build_seconds: float = 0.0    # time the artifact took to build, in whichever run built it
    cached: bool = False
    key: str = ""
    info: dict = field(default_factory=dict)
    error: str = ""


@dataclass
class CompileResult:
    stages: list[StageRecord]
    error: StageError | None = None
    latency: dict = field(default_factory=dict)              # measured now, never cached (verify/latency.py)
    latency_conditions: dict = field(default_factory=dict)

    @property
    def by_name(self) -> dict[str, StageRecord]:
        return {s.name: s for s in self.stages}


def _config_slice(cfg: DictConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    sliced = {k: OmegaConf.to_container(cfg[k], resolve=True, enum_to_str=True) if OmegaConf.is_config(cfg[k])
              else getattr(cfg[k], "value", cfg[k]) for k in keys}
    if "data" in keys and cfg.data.path:  # user files enter the key by content, not by name
        sliced["data_sha256"] = sha256_path(Path(cfg.data.path).expanduser())
    if "model" in keys and cfg.model.path:
        sliced["model_sha256"] = sha256_artifact(Path(cfg.model.path).expanduser())  # with its external data
    if "engine" in keys:  # `auto` may resolve differently on another machine; the other backend's flags do not count
        sliced["engine"] = engine_key(cfg.engine)
    if "quantize" in keys:  # int8 or fp16; not the rest of `engine`, so engine flags alone reuse the conversion
        from compiler.stages.quantize import reduce_range

        sliced["converted_precision"] = converted_precision(cfg.engine)
        sliced["reduce_range"] = reduce_range(cfg)  # `null` resolves by this CPU
    return sliced


def _place(src: Path, run_dir: Path) -> None:
    """Put an artifact and its weights files into the run dir atomically, as copies (a reflink where the file
    system has them): a hard link would let an edit in the run dir change the cache, and onnx refuses
    external data with several links."""
    for file in artifact_files(src):
        dst = run_dir / file.name
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        _copy(file, tmp)
        os.replace(tmp, dst)


def _copy(src: Path, dst: Path) -> None:
    import fcntl

    with open(src, "rb") as source, open(dst, "wb") as target:
        try:
            fcntl.ioctl(target.fileno(), 0x40049409, source.fileno())  # FICLONE: share blocks copy-on-write
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def compile_recipe(cfg: DictConfig, run_dir: Path, log: logging.Logger) -> CompileResult:
    from compiler.iospec import IOSpec

    cache = StageCache(cache_root(cfg.cache)) if cfg.cache.enabled else None
    io = IOSpec.from_cfg(cfg)
    framework = cfg.framework.value
    records: list[StageRecord] = []
    with working():  # every stage, cached or not (imports, hashing, training): never while another job times
        error = _stages(cfg, io, cache, framework, records, run_dir, log)
    if error:
        return CompileResult(records, error)
    return _timed(CompileResult(records), cfg, run_dir, log)


def _stages(cfg: DictConfig, io: Any, cache: StageCache | None, framework: str, records: list[StageRecord],
            run_dir: Path, log: logging.Logger) -> StageError | None:
    """Run (or take from the cache) every stage in order; the error that stopped them, if any."""
    for stage in STAGES:
        if stage.name == "train" and framework == "onnx":
            continue  # an ONNX recipe starts at export, which takes model.path as it is
        if stage.name == "quantize" and converted_precision(cfg.engine) is None:
            continue
        tools = stage.tools + (FRAMEWORK_TOOLS[framework] if stage.name in _FRAMEWORK_STAGES else ())
        done = {r.name: r for r in records}
        key = stage_key(stage.name, _config_slice(cfg, stage.config_keys),
                        {n: done[n].sha256 for n in stage.needs if n in done}, tool_versions(tools))
        record = StageRecord(stage.name, key=key)
        records.append(record)
        started = time.perf_counter()
        hit = cache.lookup(stage.name, key) if cache else None
        try:
            if hit:
                log.info("stage %-8s cached (%s)", stage.name, key[:12])
                artifact_path = Path(hit["path"])
                record.info, record.build_seconds, record.cached = hit["info"], hit["seconds"], True
            else:
                log.info("stage %-8s running", stage.name)
                artifact_path = _run_stage(stage, cfg, io, cache, key, done, record, run_dir, log)
            record.artifact, record.sha256 = artifact_path.name, sha256_artifact(artifact_path)
            if artifact_path.parent != run_dir:
                _place(artifact_path, run_dir)
            record.path = str(run_dir / artifact_path.name)
        except StageError as exc:
            record.error = str(exc)
            return exc
        except Exception as exc:  # an unexpected failure is still reported per stage, with its causes
            record.error = describe(exc)
            log.log(logging.ERROR if debug_enabled() else logging.DEBUG, "stage %s failed", stage.name, exc_info=True)
            return StageError(stage.name, record.error)
        finally:
            record.seconds = time.perf_counter() - started
    return None


def _timed(result: CompileResult, cfg: DictConfig, run_dir: Path, log: logging.Logger) -> CompileResult:
    """Latency of the reference model and the engine, measured now and alone on this machine."""
    from compiler.verify.latency import measure_now

    log.info("latency: waiting until no other job computes, then timing")
    try:
        result.latency, result.latency_conditions = measure_now(
            cfg, {r.name: Path(r.path) for r in result.stages}, result.by_name["build"].info["backend"])
    except Exception as exc:
        result.error = StageError("verify", f"latency measurement failed: {describe(exc)}")
    return result


def _run_stage(stage: Stage, cfg: DictConfig, io: Any, cache: StageCache | None, key: str,
               done: dict[str, StageRecord], record: StageRecord, run_dir: Path, log: logging.Logger) -> Path:
    """Run one stage in a fresh workspace; return where its artifact now lives."""
    workspace = cache.new_workspace(stage.name) if cache else Path(tempfile.mkdtemp(prefix=f".{stage.name}-", dir=run_dir))
    try:
        ctx = StageContext(cfg, workspace, {n: Path(done[n].path) for n in stage.needs if n in done},
                           {n: r.info for n, r in done.items()}, log, io)
        started = time.perf_counter()
        result = stage.load()(ctx)
        record.build_seconds = time.perf_counter() - started
        record.info = result.info
        artifact = workspace / result.artifact
        summary = {"artifact": result.artifact, "sha256": sha256_artifact(artifact), "seconds": record.build_seconds,
                   "info": result.info}
        if cache:
            return cache.commit(stage.name, key, workspace, summary)
        for file in artifact_files(artifact):
            os.replace(file, run_dir / file.name)
        return run_dir / result.artifact
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
