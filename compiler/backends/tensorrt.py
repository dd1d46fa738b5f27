"""TensorRT and TensorRT-RTX backends through Polygraphy's loaders (the builder is imported lazily).

NetworkFromOnnxPath -> [LoadPlugins] -> [layer precisions, 10 weak only] -> CreateConfig(...) ->
EngineBytesFromNetwork -> SaveBytes; TrtRunner for verification. Every argument comes from
`tensorrt_plan.build_args`, the one place where the EnginePlan becomes builder flags.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.backends.tensorrt_plan import BuildArgs, TrtEnum, build_args, rtx_module
from compiler.heavy import onnx

if TYPE_CHECKING:
    from compiler.iospec import IOSpec

log = logging.getLogger("compiler")

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8", "fp8": "fp8"}


def select_builder(backend: str) -> Any:
    """The TensorRT module for this backend. Polygraphy picks TensorRT-RTX when its config says so at the
    moment `polygraphy.backend.trt` is first imported, so the choice is made here, before that import."""
    from polygraphy import config

    rtx = backend == "tensorrt_rtx"
    if "polygraphy.backend.trt" in sys.modules and config.USE_TENSORRT_RTX != rtx:
        raise RuntimeError(f"Polygraphy's TensorRT backend was already loaded for "
                           f"{'TensorRT-RTX' if config.USE_TENSORRT_RTX else 'TensorRT'} in this process")
    config.USE_TENSORRT_RTX = rtx
    if rtx and "tensorrt_rtx" not in sys.modules:
        if rtx_module() == "tensorrt_rtx_bindings":  # PyPI's libs + bindings wheels: Polygraphy imports tensorrt_rtx
            import importlib

            sys.modules["tensorrt_rtx"] = importlib.import_module("tensorrt_rtx_bindings")
    from polygraphy.mod.trt_importer import lazy_import_trt

    return lazy_import_trt()


def _resolve(value: Any, trt: Any) -> Any:
    if isinstance(value, TrtEnum):
        return value.resolve(trt)
    if isinstance(value, dict):
        return {_resolve(k, trt): _resolve(v, trt) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, trt) for v in value]
    return value


def has_qdq(onnx_path: Path) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear")
               for n in onnx.load(str(onnx_path), load_external_data=False).graph.node)


def _set_layer_precisions(layer_precisions: dict[str, str], trt: Any):
    """A network post-processor: layer-name glob patterns -> layer precision (first match wins)."""
    def apply(network):
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            for pattern, precision in layer_precisions.items():
                if fnmatch.fnmatchcase(layer.name, pattern):
                    layer.precision = getattr(trt, _DTYPES[precision])
                    break
        return network
    return apply


def loaders(b: BuildArgs, plan: Any, trt: Any, calibration_data=None):
    """The Polygraphy loader chain for build args (no TensorRT call happens until it is invoked)."""
    from polygraphy.backend.trt import (Calibrator, CreateConfig, EngineBytesFromNetwork, LoadPlugins,
                                        NetworkFromOnnxPath, PostprocessNetwork, Profile)

    network = NetworkFromOnnxPath(b.onnx, **b.network)
    if b.plugins:
        network = LoadPlugins(plugins=b.plugins, obj=network)
    if b.layer_precisions:
        network = PostprocessNetwork(network, _set_layer_precisions(b.layer_precisions, trt), "LayerPrecisions")
    profiles = [_profile(Profile, prof) for prof in b.profiles]
    kwargs = _resolve(dict(b.config), trt)
    if b.calibration_cache:
        kwargs["calibrator"] = Calibrator(calibration_data, cache=b.calibration_cache)
    config = CreateConfig(profiles=profiles, **kwargs)
    dla_core = plan.tensorrt["dla_core"]
    if dla_core is not None:
        base = config
        config = lambda builder, network: _with_dla_core(base(builder, network), dla_core)  # noqa: E731
    return EngineBytesFromNetwork(network, config=config, save_timing_cache=b.timing_cache)


def _profile(profile_cls, shapes_by_input: dict) -> Any:
    profile = profile_cls()
    for name, (mn, op, mx) in shapes_by_input.items():
        profile.add(name, min=mn, opt=op, max=mx)
    return profile


def _with_dla_core(config, core: int):
    config.DLA_core = core
    return config


def build(onnx_path: Path, out_dir: Path, plan: Any, io: IOSpec, calibration: Any = None) -> tuple[str, dict]:
    """Build and save the engine. `calibration`: batches for TensorRT 10's calibrator (plan.calibrator)."""
    from polygraphy.backend.common import SaveBytes

    trt = select_builder(plan.backend)
    engine = out_dir / "model.engine"
    b = build_args(plan, io.engine_profiles(), onnx_path, engine)
    if b.timing_cache:
        Path(b.timing_cache).parent.mkdir(parents=True, exist_ok=True)
    if b.calibration_cache is None and plan.calibrator:
        b.calibration_cache = str(out_dir / "calibration.cache")
    try:
        SaveBytes(loaders(b, plan, trt, calibration), str(engine))()
    except Exception as exc:
        if not b.timing_cache:
            raise
        log.warning("TensorRT build with timing cache %s failed (%s); rebuilding without it", b.timing_cache, exc)
        b.config.pop("load_timing_cache", None)
        b.timing_cache = None
        SaveBytes(loaders(b, plan, trt, calibration), str(engine))()
    info = {"tensorrt": trt.__version__, "engine_bytes": engine.stat().st_size}
    try:  # inspecting deserializes: a runtime that refuses this GPU (TensorRT-RTX on a datacenter GPU) says why
        information = _engine_information(engine, trt)
        info.update(layers=layers_of(information), io_tensors=io_tensors_of(information))
    except Exception as exc:
        info["inspection_error"] = str(exc)
    return engine.name, info


def _engine_information(engine_path: Path, trt: Any) -> dict:
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes

    engine = EngineFromBytes(BytesFromPath(str(engine_path)))()
    return json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))


def layers_of(info: dict) -> list[dict]:
    """Layers from the inspector's JSON; a layer is a dict (detailed verbosity) or only its name."""
    return [{"name": layer.get("Name", str(layer)), "precision": layer.get("Precision")}
            if isinstance(layer, dict) else {"name": str(layer), "precision": None} for layer in info.get("Layers", [])]


def io_tensors_of(info: dict) -> list[dict]:
    """The engine's inputs and outputs from either JSON layout: TensorRT 10's "Bindings" (a list of names),
    or TensorRT 11's "I/O Tensors" (objects with Name, IOMode, DataType, Dimensions)."""
    if "I/O Tensors" in info:
        return [{"name": t.get("Name"), "mode": t.get("IOMode"), "dtype": t.get("DataType"),
                 "shape": t.get("Dimensions")} for t in info["I/O Tensors"]]
    return [{"name": str(name), "mode": None, "dtype": None, "shape": None} for name in info.get("Bindings", [])]


def runner(path: Path, backend: str = "tensorrt", profile_index: int = 0):
    select_builder(backend)
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(BytesFromPath(str(path))), name="engine", optimization_profile=profile_index)
