"""onnxruntime backend: optimise the cleaned model once and save it (ONNX or ORT format) as the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

from compiler.onnx_files import EXTERNAL_THRESHOLD, has_external_data

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(ort_cfg: Any, optimization_level: str | None = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[optimization_level or ort_cfg.optimization_level.value]
    options.intra_op_num_threads = ort_cfg.intra_op_threads
    options.inter_op_num_threads = ort_cfg.inter_op_threads
    options.log_severity_level = 3
    for library in ort_cfg.custom_op_libraries:
        options.register_custom_ops_library(str(Path(library).expanduser()))
    return options


# QDQPropagationTransformer moves each QuantizeLinear up through MaxPool/Reshape/Transpose. The quantize stage
# already puts Q/DQ on every op onnxruntime runs in int8, so all propagation adds is int8 inside the fp32
# islands it left on purpose: an fp32 conv -> uint8 NCHW MaxPool costs 2 ms of a 2.3 ms model (cnn_torch, b32).
INT8_DISABLED_OPTIMIZERS = ("QDQPropagationTransformer",)


def disabled_optimizers(engine_cfg: Any) -> list[str]:
    """The transformers this engine is built and loaded without; pass the same list wherever it runs."""
    chosen = engine_cfg.onnxruntime.disabled_optimizers
    if chosen is not None:
        return list(chosen)
    return list(INT8_DISABLED_OPTIMIZERS) if engine_cfg.precision.value == "int8" else []


def providers(ort_cfg: Any) -> list[str]:
    available = set(ort.get_available_providers())
    return [p for p in ort_cfg.providers if p in available] or ["CPUExecutionProvider"]


# Saved engines stop at `extended`: `all` adds layout transforms (NCHWc) specific to this CPU, which
# onnxruntime re-applies when the engine is loaded with optimization_level=all anyway.
_PORTABLE = ("disable", "basic", "extended")


def build(onnx_path: Path, out_dir: Path, cfg: Any) -> tuple[str, dict]:
    """Write the optimised model (`model.opt.onnx`, or `model.ort`); return its name and what was done."""
    ort_cfg = cfg.engine.onnxruntime
    level = ort_cfg.optimization_level.value
    options = session_options(ort_cfg, level if level in _PORTABLE else "extended")
    fmt = ort_cfg.format.value
    engine = out_dir / ("model.ort" if fmt == "ort" else "model.opt.onnx")
    options.optimized_model_filepath = str(engine)
    options.add_session_config_entry("session.save_model_format", fmt.upper())
    if fmt == "onnx" and has_external_data(onnx_path):  # weights stay beside the engine; protobuf stops at 2 GiB
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", engine.name + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(EXTERNAL_THRESHOLD))
    skipped = disabled_optimizers(cfg.engine)
    session = ort.InferenceSession(str(onnx_path), options, providers=providers(ort_cfg), disabled_optimizers=skipped)
    return engine.name, {"providers": session.get_providers(), "optimization_level": level,
                         "saved_at_level": level if level in _PORTABLE else "extended", "disabled_optimizers": skipped,
                         "format": fmt, "onnxruntime": ort.__version__}


def load_session(path: Path, engine_cfg: Any, optimization_level: str | None = None) -> ort.InferenceSession:
    """A session over an ONNX or ORT file with the recipe's threads, providers and disabled transformers."""
    ort_cfg = engine_cfg.onnxruntime
    return ort.InferenceSession(str(path), session_options(ort_cfg, optimization_level), providers=providers(ort_cfg),
                                disabled_optimizers=disabled_optimizers(engine_cfg))
