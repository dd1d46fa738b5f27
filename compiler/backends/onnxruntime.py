"""onnxruntime backend: optimise the cleaned model once and save it (ONNX or ORT format) as the engine.

Every session option comes from the EnginePlan's `onnxruntime` section (plan.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

from compiler.numerics import STRICT_FP32, MathMode
from compiler.onnx_files import EXTERNAL_THRESHOLD, has_external_data

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def without_prepacking() -> ort.SessionOptions:
    """Options for a session that only loads, probes, converts or compares a model, never one that is timed or
    shipped (the engine keeps onnxruntime's defaults). Prepacking copies every Gemm/MatMul/Conv weight into a
    layout of its own when the session loads: a second copy of the weights (on a 2.25 GiB model +255 MB and 8 s
    per session) for a speed these sessions do not need; the weights stay mapped from their file instead. The
    kernels, and so the outputs, are the same (bitwise on 61 of 62 corpus files at every optimisation level,
    1.7e-10 apart on the other)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_prepacking", "1")
    return options


def session_options(options_cfg: dict, optimization_level: str | None = None,
                    intra_op_threads: int | None = None, prepack: bool = True) -> ort.SessionOptions:
    """Session options from a plan's `onnxruntime` dict; `auto` threads run with onnxruntime's default;
    `prepack=False` for a session that only checks (without_prepacking)."""
    options = ort.SessionOptions() if prepack else without_prepacking()
    options.graph_optimization_level = _LEVELS[optimization_level or options_cfg["optimization_level"]]
    threads = options_cfg["intra_op_threads"] if intra_op_threads is None else intra_op_threads
    options.intra_op_num_threads = 0 if threads == "auto" else int(threads)
    options.inter_op_num_threads = int(options_cfg["inter_op_threads"])
    options.log_severity_level = 3
    for library in options_cfg["custom_op_libraries"]:
        options.register_custom_ops_library(str(Path(library).expanduser()))
    return options


def providers(options_cfg: dict, mode: MathMode = STRICT_FP32, model: Path | None = None) -> list:
    """The plan's providers that this onnxruntime build has, the CUDA provider with the math mode's options
    (onnxruntime's CUDA default is TF32 on; strict fp32 turns it off), this model's CUDA defaults and the plan's
    extra CUDA options."""
    from compiler.backends.providers import with_options

    available = set(ort.get_available_providers())
    chosen = [p for p in options_cfg["providers"] or ["CPUExecutionProvider"] if p in available]
    cuda = dict(options_cfg.get("cuda_options") or {})
    if "CUDAExecutionProvider" in chosen and model is not None:
        cuda = {**cuda_defaults(model), **cuda}
    return with_options(chosen, cuda, mode) or ["CPUExecutionProvider"]


CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv")


def cuda_defaults(model: Path) -> dict[str, str]:
    """CUDA provider options by the graph: NHWC convolution kernels for models with convolutions (ConvNeXt-T on
    an H200: fp16 9.25 -> 8.38 ms at b64, fp32 24.3 -> 22.0), the provider's own defaults otherwise (NHWC costs
    a ViT 3 %)."""
    import onnx

    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except Exception:  # an ORT-format engine: the options it was built with are in the file
        return {}
    return {"prefer_nhwc": "1"} if any(n.op_type in CONV_OPS for n in graph.node) else {}


# Saved engines stop at `extended`: `all` adds layout transforms (NCHWc) specific to this CPU, which
# onnxruntime re-applies when the engine is loaded with optimization_level=all anyway.
_PORTABLE = ("disable", "basic", "extended")


def build(onnx_path: Path, out_dir: Path, plan: Any) -> tuple[str, dict]:
    """Write the optimised model (`model.opt.onnx`, or `model.ort`); return its name and what was done."""
    o = plan.onnxruntime
    level = o["optimization_level"]
    options = session_options(o, level if level in _PORTABLE else "extended", prepack=False)  # saved, not run
    fmt = o["format"]
    engine = out_dir / ("model.ort" if fmt == "ort" else "model.opt.onnx")
    options.optimized_model_filepath = str(engine)
    options.add_session_config_entry("session.save_model_format", fmt.upper())
    if fmt == "onnx" and has_external_data(onnx_path):  # weights stay beside the engine; protobuf stops at 2 GiB
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", engine.name + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(EXTERNAL_THRESHOLD))
    skipped = o["disabled_optimizers"]
    session = ort.InferenceSession(str(onnx_path), options, providers=providers(o, plan.math_mode, onnx_path),
                                   disabled_optimizers=skipped)
    return engine.name, {"providers": session.get_providers(), "math_mode": plan.math_mode.name,
                         "optimization_level": level,
                         "saved_at_level": level if level in _PORTABLE else "extended", "disabled_optimizers": skipped,
                         "format": fmt, "onnxruntime": ort.__version__}


def load_session(path: Path, plan: Any, optimization_level: str | None = None,
                 intra_op_threads: int | None = None, mode: MathMode | None = None,
                 prepack: bool = True) -> ort.InferenceSession:
    """A session over an ONNX or ORT file with the plan's threads, providers and disabled transformers, in the
    given math mode (default: the plan's, i.e. the engine's; references pass STRICT_FP32)."""
    o = plan.onnxruntime
    return ort.InferenceSession(str(path), session_options(o, optimization_level, intra_op_threads, prepack),
                                providers=providers(o, plan.math_mode if mode is None else mode, path),
                                disabled_optimizers=o["disabled_optimizers"])
