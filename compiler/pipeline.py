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
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from compiler.cache import (StageCache, artifact_files, cache_root, sha256_artifact, sha256_path, stage_key,
    tool_versions)
from compiler.errors import StageError, debug_enabled, describe
from compiler.file_hashes import known_sha256, same_content
from compiler.frameworks import TOOLS as FRAMEWORK_TOOLS, adapter
from compiler.machine_lock import working
from compiler.recipe.resolved import Resolved
from compiler.serve.settings import model_name
from compiler.stages import Stage, StageContext
from compiler.stages.quantize import reduce_range
from compiler.weights import save_with_locations

if TYPE_CHECKING:
    from compiler.iospec import IOSpec
    from compiler.plan import EnginePlan


STAGES: tuple[Stage, ...] = (
    Stage("train", "compiler.stages.train:run", ("framework", "seed", "data", "model", "train")),
    Stage("export", "compiler.stages.export:run", ("framework", "model", "export"), ("train",), ("onnx", "onnxscript"),
          plan_key="load_key"),
    Stage("surgery", "compiler.stages.surgery:run", ("framework", "model", "surgery"), ("export",), ("onnx", "onnx-graphsurgeon", "onnxruntime"),
          plan_key="surgery_key"),
    Stage("quantize", "compiler.stages.quantize:run", ("framework", "seed", "data", "model", "quantize", "verify"),
          ("surgery",), ("onnxruntime", "onnx", "nvidia-modelopt"), plan_key="conversion_key"),
    Stage("build", "compiler.stages.build:run", (), ("surgery", "quantize"),
          ("onnxruntime", "tensorrt", "tensorrt-rtx", "polygraphy"), plan_key="build_key",
          calibrating_keys=("seed", "data", "model")),  # TensorRT 10's calibrator reads data
    Stage("verify", "compiler.stages.verify:run", ("framework", "seed", "data", "model", "verify"),
          ("train", "export", "surgery", "quantize", "build"), ("onnxruntime", "polygraphy"), plan_key="verify_key"),
    Stage("serve", "compiler.stages.serve:run", ("framework", "model", "export", "serve"),
          ("surgery", "quantize", "build", "verify"), ("onnx", "tritonclient"), plan_key="build_key"),
    Stage("latency", "compiler.stages.latency:run", ("framework", "seed", "data", "model", "train", "verify", "cache"),
          ("train", "export", "surgery", "quantize", "build"), cached=False),
)
COMMON = ("train", "export", "surgery")  # stages every candidate of `precision: best` shares
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
    plan: Any = None                                         # the EnginePlan the engine was built by
    search: list = field(default_factory=list)               # precision=best: one row per candidate
    latency: dict = field(default_factory=dict)              # measured now, never cached (verify/latency.py)
    latency_conditions: dict = field(default_factory=dict)
    io: Any = None                                           # the IO spec the run resolved, once (iospec.IOSpec)

    @property
    def by_name(self) -> dict[str, StageRecord]:
        return {s.name: s for s in self.stages}


def stage_view(cfg: DictConfig, keys: tuple[str, ...]) -> DictConfig:
    """The recipe as a stage sees it: only the sections its key holds; reading any other raises."""
    view = OmegaConf.masked_copy(cfg, list(keys))
    OmegaConf.set_struct(view, True)
    OmegaConf.set_readonly(view, True)
    return view


def stage_key_parts(stage: Stage, cfg: DictConfig, plan: EnginePlan, recipe: str = "model") -> dict[str, Any]:
    """Everything of the recipe and the plan that enters this stage's cache key."""
    sliced = _config_slice(cfg, stage.sections(plan))
    if stage.plan_key:
        sliced["plan"] = getattr(plan, stage.plan_key)()
    if stage.name == "serve":  # the model's name in the repository defaults to the recipe's
        sliced["model_name"] = model_name(cfg.serve.model_name, recipe)
    return sliced


def _config_slice(cfg: DictConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    sliced = {k: OmegaConf.to_container(cfg[k], resolve=True, enum_to_str=True) if OmegaConf.is_config(cfg[k])
              else getattr(cfg[k], "value", cfg[k]) for k in keys}
    if "data" in keys and cfg.data.path:  # user files enter the key by content, not by name
        sliced["data_sha256"] = sha256_path(Path(cfg.data.path).expanduser())
    if "model" in keys and cfg.model.path:
        sliced["model_sha256"] = sha256_artifact(Path(cfg.model.path).expanduser())  # with its external data
    if "train" in keys:  # data-parallel results differ from one process's (float order, per-shard BatchNorm)
        sliced["train_processes"] = adapter(cfg.framework.value).world_size(cfg.train)
    if "quantize" in keys:
        sliced["reduce_range"] = reduce_range(cfg.quantize)  # `null` resolves by this CPU
    return sliced


def _place(src: Path, run_dir: Path) -> None:
    """Put an artifact and its weights files into the run dir atomically, as copies (a reflink where the file
    system has them): a hard link would let an edit in the run dir change the cache, and onnx refuses
    external data with several links. A weights file byte for byte one already placed (a cleaned model whose
    passes changed no weight) is not copied again: the run dir's model names that file instead."""
    if src.is_dir():
        _place_folder(src, run_dir)
        return
    model, *weights = artifact_files(src)
    shared = _placed_before(weights, run_dir)
    for file in [model, *(w for w in weights if w.name not in shared)]:
        dst = run_dir / file.name
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        if file is model and shared:  # the model names the run dir's file instead: other bytes than the cache's
            save_with_locations(file, tmp, shared)
            os.replace(tmp, dst)
            continue
        _copy(file, tmp)
        os.replace(tmp, dst)
        same_content(file, dst)  # its hash is the cache file's: a stage that copies it on is not read again


def _place_folder(src: Path, run_dir: Path) -> None:
    """A folder artifact (the serving repository) as a whole: copied beside, then renamed into place."""
    tmp = run_dir / f".{src.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, copy_function=lambda a, b: _copy(Path(a), Path(b)))
    dst = run_dir / src.name
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def _placed_before(weights: list[Path], run_dir: Path) -> dict[str, str]:
    """{weights file name: the run dir's file with the same bytes}, from hashes this run already knows (nothing
    is read to find out)."""
    found = {}
    for file in weights:
        digest = known_sha256(file)
        if digest is None:
            continue
        size = file.stat().st_size
        for other in run_dir.glob("*.data"):
            if other.name != file.name and other.stat().st_size == size and known_sha256(other) == digest:
                found[file.name] = other.name
                break
    return found


def _copy(src: Path, dst: Path) -> None:
    import fcntl

    with open(src, "rb") as source, open(dst, "wb") as target:
        try:
            fcntl.ioctl(target.fileno(), 0x40049409, source.fileno())  # FICLONE: share blocks copy-on-write
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def compile_recipe(resolved: Resolved, run_dir: Path, log: logging.Logger, plot: Any = None,
                   recipe: str = "model") -> CompileResult:
    """Every stage in order (cached where it can be), then latency measured now, for a checked recipe (its
    read-only config, its IOSpec and EnginePlan). `plot` (training_plot.TrainingPlot) starts drawing once
    training is done and is waited for before anything is timed. `recipe`: its name (the serving model's
    default name)."""
    cfg, io, plan = resolved.cfg, resolved.io, resolved.plan
    cache = StageCache(cache_root(cfg.cache)) if cfg.cache.enabled else None
    stages = [s for s in STAGES if s.name in COMMON] if plan.search else [s for s in STAGES if s.cached]
    records: list[StageRecord] = []
    with working():  # every stage, cached or not (imports, hashing, training): never while another job times
        error = _stages(cfg, io, plan, cache, stages, records, run_dir, log, plot, recipe)
    if plot is not None:
        plot.wait()
    if error:
        return CompileResult(records, error, plan=plan, io=io)
    if plan.search:
        return _search(cfg, io, plan, cache, records, run_dir, log, recipe)
    return _timed(CompileResult(records, plan=plan, io=io), cfg, run_dir, log, recipe)


def _stages(cfg: DictConfig, io: IOSpec, plan: EnginePlan, cache: StageCache | None, stages: list[Stage],
            records: list[StageRecord], run_dir: Path, log: logging.Logger, plot: Any = None,
            recipe: str = "model") -> StageError | None:
    """Run (or take from the cache) the stages in order, appending to `records`; the error that stopped them."""
    framework = cfg.framework.value
    for stage in stages:
        done = {r.name: r for r in records}
        if stage.name == "train" and framework == "onnx":
            continue  # an ONNX recipe starts at export, which takes model.path as it is
        if stage.name == "quantize" and plan.conversion == "none":
            continue
        if stage.name == "serve" and (cfg.serve.target.value == "none" or "verify" not in done
                                      or not done["verify"].info.get("passed")):
            continue  # only a verified engine is packaged for serving
        tools = stage.tools + (FRAMEWORK_TOOLS[framework] if stage.name in _FRAMEWORK_STAGES else ())
        key = stage_key(stage.name, stage_key_parts(stage, cfg, plan, recipe),
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
                artifact_path = _run_stage(stage, cfg, io, plan, cache, key, done, record, run_dir, log, recipe)
            record.artifact, record.sha256 = artifact_path.name, sha256_artifact(artifact_path)
            if artifact_path.parent != run_dir:
                _place(artifact_path, run_dir)
            record.path = str(run_dir / artifact_path.name)
            if stage.name == "train" and plot is not None:
                plot.start(record.info.get("history", []))
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


def _search(cfg: DictConfig, io: IOSpec, plan: EnginePlan, cache: StageCache | None, common: list[StageRecord],
            run_dir: Path, log: logging.Logger, recipe: str = "model") -> CompileResult:
    """`precision: best`: convert, build and verify every candidate precision, and on the CUDA provider the
    runtime variants (layout, CUDA graphs, fusion: _build_variants) of each that passed within VARIANT_REACH
    of the fastest; time all their engines on the same inputs, and keep the fastest whose gates all passed."""
    from compiler.verify.latency import time_engines

    outcomes: dict[str, tuple[Any, list[StageRecord], StageError | None]] = {}

    def build(candidate: Any) -> None:
        folder, records = run_dir / "candidates" / candidate.label, list(common)
        folder.mkdir(parents=True, exist_ok=True)
        log.info("best: building the %s candidate", candidate.label)
        with working():
            error = _stages(cfg, io, candidate, cache,
                            [s for s in STAGES if s.cached and s.name not in COMMON + ("serve",)],
                            records, folder, log)
        outcomes[candidate.label] = (candidate, records, error)

    def engines() -> dict[str, tuple[Any, Path]]:
        return {label: (c, _engine(r)) for label, (c, r, _) in outcomes.items() if _engine(r) is not None}

    for precision in plan.search:
        build(plan.with_precision(precision))
    within = _within_reach(outcomes, time_engines(cfg, io, engines()) if plan.cuda_provider else {})
    for label in [label for label in outcomes if label in within]:
        _build_variants(outcomes[label][0], outcomes, build)
    latency = time_engines(cfg, io, engines())
    rows = [search_row(label, *outcomes[label], latency.get(label, {})) for label in outcomes]
    passed = [r for r in rows if r["passed"]]
    if not passed:
        reasons = "; ".join(f"{r['candidate']}: {r['why']}" for r in rows)
        return CompileResult(common, StageError("verify", f"precision=best: no candidate passed ({reasons})"),
                             plan=plan, search=rows, io=io)
    winner = min(passed, key=lambda r: r["speed_ms"])
    winner["chosen"] = True
    candidate, records, _ = outcomes[winner["candidate"]]
    for record in records[len(common):]:  # the winner's artifacts take their place in the run dir
        _place(Path(record.path), run_dir)
        record.path = str(run_dir / record.artifact)
    log.info("best: %s (%s)", winner["candidate"], winner["why"])
    with working():  # the winner alone is packaged for serving
        error = _stages(cfg, io, candidate, cache, [s for s in STAGES if s.name == "serve"], records, run_dir, log,
                        recipe=recipe)
    if error:
        return CompileResult(records, error, plan=candidate, search=rows, io=io)
    return _timed(CompileResult(records, plan=candidate, search=rows, io=io), cfg, run_dir, log, recipe)


# Runtime variants (layout, CUDA graphs, fusion) moved a compute-bound model's p50 by at most 1.3x on the lent H100
# (ConvNeXt-T fp16 NHWC 9.08 -> 7.88 ms with graphs; graphs 2-5 % on ViT-S, BERT-base, ResNet-50), while its
# precisions lie 2.8-9x apart (fp32 or tf32 against fp16); a launch-bound model gains up to 2.5x from graphs
# (resnet_torch fp32 0.26 -> 0.10 ms) but its precisions lie within 1.6x, and the winner there was tf32's graph
# variant at 1.50x its fp16 base. A precision slower than 2x the fastest gets no variants.
VARIANT_REACH = 2.0


def _stage_info(records: list[StageRecord], stage: str) -> dict:
    """What a candidate's stage recorded ({} where it did not run)."""
    return next((r.info for r in records if r.name == stage and r.info), {})


def _engine(records: list[StageRecord]) -> Path | None:
    """A candidate's built engine file, if its build ran."""
    return next((Path(r.path) for r in records if r.name == "build" and r.path), None)


def _build_variants(candidate: Any, outcomes: dict, build: Any) -> None:
    """A passing precision candidate's runtime variants: the other layout; CUDA graphs for each layout whose own
    placement is all on the GPU (NHWC can move shape arithmetic to the host where NCHW does not); unfused where the
    fusion fused something."""
    from compiler.backends.onnxruntime import convolutions, effective_layout, graph_capturable

    def passed(plan: EnginePlan) -> dict | None:
        _, records, error = outcomes[plan.label]
        verify, engine = _stage_info(records, "verify"), _engine(records)
        return {**verify, "engine": engine} if error is None and verify.get("passed") and engine else None

    base = passed(candidate)
    count = convolutions(base["engine"])
    layouts = [candidate] + candidate.layout_variants(count > 0, effective_layout(candidate.layout, count))
    for variant in layouts[1:]:
        build(variant)
    for plan in layouts:
        verified = passed(plan)
        graph = plan.graph_variant(graph_capturable(verified.get("placement") or {})) if verified else None
        if graph is not None:
            build(graph)
    _, records, _ = outcomes[candidate.label]
    fused = _stage_info(records, "quantize").get("fused_for_gpu") or {}
    unfused = candidate.unfused_variant()
    if unfused is not None and fused.get("fused_operators"):  # a conv net fuses nothing: the same engine again
        build(unfused)


def _within_reach(outcomes: dict, latency: dict[str, dict]) -> set[str]:
    """The precision candidates that get runtime variants: those that passed and whose p50 at the largest batch is
    within VARIANT_REACH of the fastest's (every passing one where nothing was timed)."""
    passed = {label for label, (_, records, error) in outcomes.items()
              if error is None and _stage_info(records, "verify").get("passed")}
    speed = {label: t[max(t, key=lambda b: int(b[1:]))]["p50"] for label, t in latency.items()
             if label in passed and t}
    if not speed:
        return passed
    return {label for label in passed if label not in speed or speed[label] <= VARIANT_REACH * min(speed.values())}


def search_row(label: str, plan: EnginePlan, records: list[StageRecord], error: StageError | None,
               latency: dict) -> dict:
    """One candidate of `precision: best`: what it converted with, its runtime settings, its accuracy, its gates,
    its speed."""
    verify = _stage_info(records, "verify")
    largest = max(latency, key=lambda b: int(b[1:]), default=None)
    row = {"candidate": label, "precision": plan.precision, "conversion": plan.conversion, "tool": plan.tool,
           "fusion": plan.fusion, "layout": plan.layout, "cuda_graph": plan.cuda_graph,
           "memcpy": (verify.get("placement") or {}).get("memcpy"),
           "accuracy": verify.get("accuracy", {}).get("engine"),
           "reference_accuracy": verify.get("accuracy", {}).get(plan.reference),
           "passed": error is None and bool(verify.get("passed")), "latency_ms": {b: v["p50"] for b, v in latency.items()},
           "speed_batch": largest, "speed_ms": latency[largest]["p50"] if largest else None, "chosen": False}
    if error is not None or not verify.get("passed"):
        failed = [g["name"] for g in verify.get("gates", []) if not g["passed"]]
        row["why"] = str(error) if error and error.stage != "verify" else "failed " + ", ".join(failed)
    elif row["speed_ms"] is None:
        row.update(passed=False, why="not timed")
    else:
        row["why"] = f"passed every gate; {row['speed_ms']:.3f} ms p50 at {largest}"
    return row


def _timed(result: CompileResult, cfg: DictConfig, run_dir: Path, log: logging.Logger,
           recipe: str = "model") -> CompileResult:
    """The stages that are never cached (latency), after the others and outside their work lock."""
    error = _stages(cfg, result.io, result.plan, None, [s for s in STAGES if not s.cached], result.stages, run_dir,
                    log, recipe=recipe)
    latency = next((r.info for r in result.stages if r.name == "latency" and r.info), {})
    result.latency, result.latency_conditions = latency.get("latency", {}), latency.get("conditions", {})
    result.error = error
    return result


def _run_stage(stage: Stage, cfg: DictConfig, io: IOSpec, plan: EnginePlan, cache: StageCache | None, key: str,
               done: dict[str, StageRecord], record: StageRecord, run_dir: Path, log: logging.Logger,
               recipe: str = "model") -> Path:
    """Run one stage in a fresh workspace, seeing only what its key holds; return where its artifact lives."""
    workspace = cache.new_workspace(stage.name) if cache else Path(tempfile.mkdtemp(prefix=f".{stage.name}-", dir=run_dir))
    try:
        ctx = StageContext(stage_view(cfg, stage.sections(plan)), workspace,
                           {n: Path(done[n].path) for n in stage.needs if n in done},
                           {n: done[n].info for n in stage.needs if n in done}, log, io, plan, recipe)
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
