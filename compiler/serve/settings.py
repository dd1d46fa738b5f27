"""The `serve` section resolved against the IO spec and the EnginePlan, once, and everything of it that Triton
cannot express (lint problems, exit 2, before any work)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compiler.backends.providers import canonical
from compiler.errors import Problem
from compiler.packages import install_line

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec
    from compiler.plan import EnginePlan

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")   # a folder name Triton loads (and a URL path part)
PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")  # the backend's EPs


@dataclass(frozen=True)
class ServeSettings:
    """What the model config is made of, besides the IO the engine file declares."""

    name: str
    max_batch_size: int                  # 0: no batching, full dims
    batch_dim: str | None                # the dim Triton batches along (leads every input)
    batch_range: tuple[int, int, int]    # that dim's min, opt, max over every profile
    queue_delay_us: int | None           # dynamic batching's delay; None: no dynamic batcher
    preferred_batch_sizes: tuple[int, ...]
    instances: int
    gpu: bool                            # instance kind: the engine's device
    warmup: bool
    versions: int
    notes: tuple[str, ...] = ()

    def unbatched(self, reason: str) -> "ServeSettings":
        """These settings without batching (full dims), saying why."""
        return dataclasses.replace(self, max_batch_size=0, batch_dim=None, queue_delay_us=None,
                                   preferred_batch_sizes=(), notes=self.notes + (f"max_batch_size 0 (full dims): "
                                                                                 f"{reason}",))


def model_name(name: str | None, recipe: str) -> str:
    """serve.model_name, or the recipe's name made a valid Triton model name."""
    if name:
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", recipe).lstrip(".-") or "model"
    return cleaned[:128]


def _batch(io: IOSpec) -> tuple[str | None, tuple[int, int, int]]:
    dim = io.batch_dim
    if dim is None:
        return None, io.batch_range()
    ranges = [p[dim] for p in io.profiles if dim in p] or [io.batch_range()]
    return dim, (min(r[0] for r in ranges), ranges[0][1], max(r[2] for r in ranges))


def resolve(serve: Any, io: IOSpec, plan: EnginePlan, recipe: str) -> ServeSettings:
    """The settings of a linted recipe (serve_problems found nothing)."""
    dim, (low, opt, high) = _batch(io)
    notes = []
    if serve.max_batch_size == "auto":
        if dim is None:
            size = 0
            notes.append("max_batch_size 0 (full dims): the inputs do not all start with one named batch dim")
        elif low > 1:
            size = 0
            notes.append(f"max_batch_size 0 (full dims): the engine takes no batch below {low} "
                         f"(model.dims.{dim}), and Triton batches from 1")
        else:
            size = high
    else:
        size = int(serve.max_batch_size)
    batching = serve.dynamic_batching
    delay = int(batching.max_queue_delay_us) if batching.enabled and size > 0 else None
    if batching.enabled and size == 0:
        notes.append("no dynamic batching: Triton batches only models with max_batch_size > 0")
    instances = 1 if serve.instances == "auto" else int(serve.instances)
    return ServeSettings(model_name(serve.model_name, recipe), size, dim if size else None, (low, opt, high), delay,
                         tuple(sorted({int(b) for b in batching.preferred_batch_sizes})) if delay is not None else (),
                         instances, bool(plan.gpu), bool(serve.warmup), int(serve.versions), tuple(notes))


# --- lint -----------------------------------------------------------------------------------

def serve_problems(cfg: DictConfig) -> list[Problem]:
    """Every `serve` setting that is bad in itself, and with `target: triton` everything of the recipe's engine
    that Triton cannot express (its IO: `serve_io_problems`, once the recipe is resolved)."""
    serve = cfg.serve
    problems = _setting_problems(serve)
    if serve.target.value != "triton" or problems:
        return problems
    import importlib.util

    if importlib.util.find_spec("tritonclient") is None:  # Triton's own schema writes the config (not imported here)
        return [Problem("serve.target", "writing a Triton model config needs tritonclient", "triton",
                        "none, or triton with the serve extra installed", fix=install_line("tritonclient") +
                        ", or set serve.target=none")]
    return problems + _engine_problems(cfg)


def serve_io_problems(serve: Any, io: IOSpec) -> list[Problem]:
    """With `target: triton`, what of the resolved IOSpec a Triton config cannot say (the batch dim, its range)."""
    return _batch_problems(serve, io) if serve.target.value == "triton" else []


def _setting_problems(serve: Any) -> list[Problem]:
    problems = []
    if serve.model_name is not None and not NAME.match(str(serve.model_name)):
        problems.append(Problem("serve.model_name", "not a name Triton loads", serve.model_name,
                                "letters, digits, '_', '.', '-', not starting with '.' or '-', at most 128",
                                fix="e.g. serve.model_name=classifier"))
    size = serve.max_batch_size
    if size != "auto" and not (_is_int(size) and int(size) >= 0):
        problems.append(Problem("serve.max_batch_size", "not a batch size", size, "auto, or an integer >= 0 "
                                "(0: no batching)", fix="serve.max_batch_size=auto"))
    batching = serve.dynamic_batching
    if not _is_int(batching.max_queue_delay_us) or int(batching.max_queue_delay_us) < 0:
        problems.append(Problem("serve.dynamic_batching.max_queue_delay_us", "must be >= 0",
                                batching.max_queue_delay_us, "microseconds, 0 or more",
                                fix="e.g. serve.dynamic_batching.max_queue_delay_us=100"))
    bad = [b for b in batching.preferred_batch_sizes if not _is_int(b) or int(b) < 1]
    if bad:
        problems.append(Problem("serve.dynamic_batching.preferred_batch_sizes", "not batch sizes",
                                list(batching.preferred_batch_sizes), "a list of integers >= 1",
                                fix="e.g. serve.dynamic_batching.preferred_batch_sizes=[8,16], or []"))
    elif batching.preferred_batch_sizes and not batching.enabled:  # the config would drop them without a word
        problems.append(Problem("serve.dynamic_batching.preferred_batch_sizes",
                                "set with dynamic batching off (serve.dynamic_batching.enabled=false)",
                                list(batching.preferred_batch_sizes), "[] while dynamic batching is off",
                                fix="serve.dynamic_batching.preferred_batch_sizes=[], or "
                                    "serve.dynamic_batching.enabled=true"))
    if serve.instances != "auto" and not (_is_int(serve.instances) and 1 <= int(serve.instances) <= 64):
        problems.append(Problem("serve.instances", "not an instance count", serve.instances, "auto, or 1..64",
                                fix="serve.instances=auto"))
    if not 1 <= serve.versions <= 100:
        problems.append(Problem("serve.versions", "not a version count", serve.versions, "1..100",
                                fix="serve.versions=1"))
    return problems


def _engine_problems(cfg: DictConfig) -> list[Problem]:
    """What of the resolved engine (plan.py reads the engine section) a Triton config cannot say."""
    from compiler.plan import resolve

    try:
        plan = resolve(cfg)
    except Exception:
        return []  # the engine section's own problems are reported by its checks
    problems = []
    if plan.backend == "tensorrt_rtx":
        problems.append(Problem("engine.backend", "Triton has no TensorRT-RTX backend", plan.backend,
                                "onnxruntime or tensorrt with serve.target=triton",
                                fix="set engine.backend=onnxruntime (or tensorrt), or serve.target=none"))
    if plan.backend != "onnxruntime":
        return problems
    o = plan.onnxruntime
    if getattr(o["format"], "value", o["format"]) == "ort":
        problems.append(Problem("engine.onnxruntime.format", "Triton's onnxruntime backend loads ONNX files only",
                                "ort", "onnx with serve.target=triton", fix="set engine.onnxruntime.format=onnx"))
    if list(o["custom_op_libraries"]):
        problems.append(Problem("engine.onnxruntime.custom_op_libraries", "a Triton model config cannot register a "
                                "custom-op library with onnxruntime", list(o["custom_op_libraries"]),
                                "[] with serve.target=triton", fix="load the library into the server with "
                                "LD_PRELOAD and remove it here, or set serve.target=none"))
    other = [p for p in plan.providers if _provider(p) not in PROVIDERS]
    if other:
        problems.append(Problem("engine.onnxruntime.providers", "Triton's onnxruntime backend runs the CPU, CUDA and "
                                "TensorRT providers only", plan.providers, ", ".join(PROVIDERS),
                                fix="choose among those, or set serve.target=none"))
    for i, spec in enumerate(cfg.model.inputs):
        if spec.dtype is not None and spec.dtype.value == "bfloat16":
            problems.append(Problem(f"model.inputs[{i}].dtype", "Triton's onnxruntime backend takes no bf16 "
                                    "inputs", "bfloat16", "float32 or float16 inputs with serve.target=triton",
                                    fix="export the model with float32 inputs (a Cast inside), or set "
                                        "serve.target=none"))
    return problems


def _provider(name: Any) -> str:
    return canonical(str(name)) or str(name)


def _batch_problems(serve: Any, io: IOSpec) -> list[Problem]:
    size = serve.max_batch_size
    dim, (low, _, high) = _batch(io)
    problems = []
    if size != "auto" and int(size) > 0:
        if dim is None:
            problems.append(Problem("serve.max_batch_size", "Triton batches along a first dim every input shares, "
                                    "and the inputs do not all start with one named dim", size,
                                    "0 (full dims), or auto", fix="serve.max_batch_size=0"))
        elif int(size) > high:
            problems.append(Problem("serve.max_batch_size", f"above the engine's largest batch (model.dims.{dim} "
                                    f"max {high})", size, f"1..{high}, auto, or 0",
                                    fix=f"serve.max_batch_size={high}, or raise model.dims.{dim}'s max"))
        elif low > 1:
            problems.append(Problem("serve.max_batch_size", f"Triton forms batches from 1, and the engine takes no "
                                    f"batch below {low} (model.dims.{dim})", size, "0 (full dims), or a batch "
                                    "range starting at 1", fix=f"serve.max_batch_size=0, or model.dims.{dim} from 1"))
    limit = high if size == "auto" and dim is not None and low <= 1 else (int(size) if size != "auto" else 0)
    preferred = [int(b) for b in serve.dynamic_batching.preferred_batch_sizes]
    over = [b for b in preferred if b > limit]
    if over and not problems:
        problems.append(Problem("serve.dynamic_batching.preferred_batch_sizes", f"above max_batch_size ({limit})",
                                preferred, f"sizes 1..{limit}" if limit else "[] (this model is not batched)",
                                fix="serve.dynamic_batching.preferred_batch_sizes=[]"))
    return problems


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) or (isinstance(v, str) and v.lstrip("-").isdigit())
