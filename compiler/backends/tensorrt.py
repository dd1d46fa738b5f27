"""TensorRT backend through Polygraphy's loaders (TensorRT itself is imported lazily by Polygraphy).

NetworkFromOnnxPath -> [LoadPlugins] -> [layer precisions] -> CreateConfig(...) ->
EngineBytesFromNetwork -> SaveBytes; TrtRunner for verification. Every argument comes from
`tensorrt_plan.plan`, the one place where recipe fields become builder flags.
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any

from compiler.backends.tensorrt_plan import BuildPlan, TrtEnum, plan
from compiler.cache import cache_root

log = logging.getLogger("compiler")

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8", "fp8": "fp8"}


def _resolve(value: Any, trt: Any) -> Any:
    if isinstance(value, TrtEnum):
        return value.resolve(trt)
    if isinstance(value, dict):
        return {_resolve(k, trt): _resolve(v, trt) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, trt) for v in value]
    return value


def has_qdq(onnx_path: Path) -> bool:
    import onnx

    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(onnx_path)).graph.node)


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


def loaders(p: BuildPlan, cfg: Any, calibration_data=None):
    """The Polygraphy loader chain for a plan (no TensorRT call happens until it is invoked)."""
    import tensorrt as trt
    from polygraphy.backend.trt import (Calibrator, CreateConfig, EngineBytesFromNetwork, LoadPlugins,
                                        NetworkFromOnnxPath, PostprocessNetwork, Profile)

    network = NetworkFromOnnxPath(p.onnx, **p.network)
    if p.plugins:
        network = LoadPlugins(plugins=p.plugins, obj=network)
    if p.layer_precisions:
        network = PostprocessNetwork(network, _set_layer_precisions(p.layer_precisions, trt), "LayerPrecisions")
    profiles = [_profile(Profile, prof) for prof in p.profiles]
    kwargs = _resolve(dict(p.config), trt)
    if p.calibration_cache:
        kwargs["calibrator"] = Calibrator(calibration_data, cache=p.calibration_cache)
    config = CreateConfig(profiles=profiles, **kwargs)
    if cfg.engine.tensorrt.dla_core is not None:
        dla_core = cfg.engine.tensorrt.dla_core
        base = config
        config = lambda builder, network: _with_dla_core(base(builder, network), dla_core)  # noqa: E731
    return EngineBytesFromNetwork(network, config=config, save_timing_cache=p.timing_cache)


def _profile(profile_cls, shapes_by_input: dict) -> Any:
    profile = profile_cls()
    for name, (mn, op, mx) in shapes_by_input.items():
        profile.add(name, min=mn, opt=op, max=mx)
    return profile


def _with_dla_core(config, core: int):
    config.DLA_core = core
    return config


def build(onnx_path: Path, out_dir: Path, cfg: Any) -> tuple[str, dict]:
    from polygraphy.backend.common import SaveBytes

    from compiler.data.sources import load_dataset

    engine = out_dir / "model.engine"
    p = plan(cfg, onnx_path, engine, has_qdq=has_qdq(onnx_path), cache_dir=cache_root(cfg.cache))
    if p.timing_cache:
        Path(p.timing_cache).parent.mkdir(parents=True, exist_ok=True)
    calibration = None
    if p.calibration_cache:
        from compiler.iospec import IOSpec, batch_size, slice_batch

        io = IOSpec.from_cfg(cfg)
        samples = io.to_engine(load_dataset(cfg.data, io, cfg.seed).calibration(cfg.data.calibration_size))
        batch = io.batch_range(len(io.profiles) - 1)[1]
        calibration = [slice_batch(samples, i, i + batch) for i in range(0, batch_size(samples) - batch + 1, batch)]
    try:
        SaveBytes(loaders(p, cfg, calibration), str(engine))()
    except Exception as exc:
        if not p.timing_cache:
            raise
        log.warning("TensorRT build with timing cache %s failed (%s); rebuilding without it", p.timing_cache, exc)
        p.config.pop("load_timing_cache", None)
        p.timing_cache = None
        SaveBytes(loaders(p, cfg, calibration), str(engine))()
    return engine.name, {"layers": inspect_layers(engine), "tensorrt": _version()}


def _version() -> str:
    import tensorrt as trt

    return trt.__version__


def inspect_layers(engine_path: Path) -> list[dict]:
    """Layer names and precisions from TensorRT's engine inspector."""
    import json

    import tensorrt as trt
    from polygraphy.backend.trt import EngineFromBytes
    from polygraphy.backend.common import BytesFromPath

    engine = EngineFromBytes(BytesFromPath(str(engine_path)))()
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    layers = info.get("Layers", [])
    return [{"name": layer.get("Name", str(layer)) if isinstance(layer, dict) else str(layer),
             "precision": layer.get("Precision") if isinstance(layer, dict) else None} for layer in layers]


def runner(path: Path, profile_index: int = 0):
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(BytesFromPath(str(path))), name="engine", optimization_profile=profile_index)
