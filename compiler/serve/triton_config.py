"""The Triton model config of an engine, made in one place from the resolved serve settings, the IO spec, the
EnginePlan and the engine's runtime settings, written with Triton's own schema (tritonclient's model_config_pb2).

The real config names the engine's backend (`onnxruntime_onnx` or `tensorrt_plan`) with the runtime settings the
compiler verified the engine with; the twin (`configs/python_onnxruntime.pbtxt`) is the same config on Triton's
Python backend, which serves the same file through onnxruntime where the real backend is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import onnx

from compiler.iospec import random_array
from compiler.passes._gs import static_shapes
from compiler.serve.batching import mixing_reason
from compiler.serve.settings import ServeSettings

if TYPE_CHECKING:
    from compiler.iospec import IOSpec
    from compiler.plan import EnginePlan

TWIN_CONFIG = "python_onnxruntime"           # configs/<this>.pbtxt, chosen with --model-config-name
TWIN_MODEL = "model.py"                       # the Python backend's default file name
WARMUP_FOLDER = "warmup"                      # Triton reads warm-up data files from <model>/warmup/
WARMUP_SEED = 0

DATA_TYPES = {  # ONNX element type -> Triton data type (TYPE_*); others have no Triton type
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16", onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64", onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16", onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64", onnx.TensorProto.BOOL: "TYPE_BOOL", onnx.TensorProto.STRING: "TYPE_STRING",
}
# onnxruntime's graph level -> the onnxruntime backend's `optimization.graph.level` (absent: all)
GRAPH_LEVELS = {"basic": -1, "extended": 1, "disable": 2}


class ConfigError(ValueError):
    """The engine declares something a Triton config cannot say (a tensor type, an unknown output rank)."""


@dataclass(frozen=True)
class TensorFacts:
    name: str
    data_type: str                     # TYPE_*
    dims: tuple[int, ...]              # -1 where dynamic, batch included


def engine_io(model: onnx.ModelProto, io: IOSpec,
              source: Path | None = None) -> tuple[list[TensorFacts], list[TensorFacts]]:
    """The served file's inputs and outputs as Triton sees them (`model`: that file, loaded without its weights):
    types from the file, input dims from the IO spec, output dims from the file (dynamic: -1), batch included; an
    output the file declares no shape for gets its rank from inference on `source` (the ONNX the engine was built
    from; the model itself without one), every dim -1."""
    graph = model.graph
    inputs = []
    declared = {v.name: v for v in graph.input}
    for tensor in io.inputs:
        value = declared.get(tensor.name)
        if value is None:
            raise ConfigError(f"the engine has no input '{tensor.name}'")
        inputs.append(TensorFacts(tensor.name, _data_type(value), tuple(d if isinstance(d, int) else -1
                                                                        for d in tensor.shape)))
    inferred = None
    outputs = []
    for value in graph.output:
        if not value.type.tensor_type.HasField("shape"):
            if inferred is None:
                built_from = onnx.load(str(source), load_external_data=False) if source else model
                inferred = static_shapes(built_from, io.shapes(0, "opt"), symbolic=True) or {}
            if value.name not in inferred:
                raise ConfigError(f"output '{value.name}' has no declared or inferable rank, which a Triton config "
                                  "needs")
            outputs.append(TensorFacts(value.name, _data_type(value), (-1,) * len(inferred[value.name][0])))
            continue
        outputs.append(TensorFacts(value.name, _data_type(value), _dims(value)))
    return inputs, outputs


def batch_problem(model: onnx.ModelProto, source: Path, io: IOSpec, settings: ServeSettings) -> str | None:
    """Why Triton may not batch along the inputs' first dim, or None: every output must start with it (declared
    with the inputs' dim name, or inferred so at the smallest and largest batch on `source`, the standard-ops ONNX
    the engine was built from), and the samples of a batch must be independent (serve/batching.py)."""
    graph = model.graph
    firsts = {v.type.tensor_type.shape.dim[0].dim_param for v in graph.input
              if v.name in io.input_names and v.type.tensor_type.shape.dim}
    undeclared = [v.name for v in graph.output if not (len(firsts) == 1 and "" not in firsts and
                                                       v.type.tensor_type.shape.dim and
                                                       v.type.tensor_type.shape.dim[0].dim_param in firsts)]
    if undeclared:
        reason = _outputs_lead(source, io, settings, undeclared)
        if reason:
            return reason
    low, _, high = settings.batch_range
    return mixing_reason(source, io) if low <= 2 <= high else None


def _outputs_lead(model: Path, io: IOSpec, settings: ServeSettings, names: list[str]) -> str | None:
    low, _, high = settings.batch_range
    graph = onnx.load(str(model), load_external_data=False)
    for batch in sorted({max(low, 1), high}):
        known = static_shapes(graph, io.shapes(0, "opt", batch=batch), symbolic=True) or {}
        for name in names:
            dims = known.get(name, ([],))[0]
            if not dims or dims[0] != batch:
                return (f"output '{name}' does not start with the batch dim '{settings.batch_dim}' (at batch {batch} "
                        f"its shape is {dims or 'unknown'})")
    return None


def _data_type(value: onnx.ValueInfoProto) -> str:
    elem = value.type.tensor_type.elem_type
    if elem not in DATA_TYPES:
        raise ConfigError(f"'{value.name}' is {onnx.TensorProto.DataType.Name(elem)}, which Triton has no type for")
    return DATA_TYPES[elem]


def _dims(value: onnx.ValueInfoProto) -> tuple[int, ...]:
    tensor = value.type.tensor_type
    return tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tensor.shape.dim)


def _without_batch(dims: Sequence[int], settings: ServeSettings) -> list[int]:
    return list(dims[1:]) if settings.max_batch_size else list(dims)


# --- the config ----------------------------------------------------------------------------------------------

def model_config(settings: ServeSettings, io: IOSpec, plan: EnginePlan, runtime: dict | None,
                 inputs: list[TensorFacts], outputs: list[TensorFacts]) -> Any:
    """The real config (a ModelConfig message)."""
    from tritonclient.grpc import model_config_pb2 as pb

    config = pb.ModelConfig(name=settings.name, max_batch_size=settings.max_batch_size)
    config.platform = "tensorrt_plan" if plan.backend == "tensorrt" else "onnxruntime_onnx"
    config.version_policy.latest.num_versions = settings.versions
    for facts, field in ((inputs, config.input), (outputs, config.output)):
        for t in facts:
            field.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=_without_batch(t.dims, settings))
    if settings.queue_delay_us is not None:
        config.dynamic_batching.max_queue_delay_microseconds = settings.queue_delay_us
        config.dynamic_batching.preferred_batch_size.extend(settings.preferred_batch_sizes)
    kind = pb.ModelInstanceGroup.Kind.Value("KIND_GPU" if settings.gpu else "KIND_CPU")
    config.instance_group.add(kind=kind, count=settings.instances)
    if plan.backend != "tensorrt" and runtime is not None:
        _onnxruntime_settings(config, runtime, io)
    if settings.warmup:
        for name, batch, shapes in warmup_requests(settings, io):
            _warmup_entry(config, name, batch, shapes, io, inputs, settings)
    return config


def _onnxruntime_settings(config: Any, runtime: dict, io: IOSpec) -> None:
    """The engine's session: graph level, threads, and each provider's options as the backend's accelerators."""
    session = runtime["session"]
    level = session["graph_optimization_level"]
    if session["disabled_optimizers"]:
        # the saved engine already holds every rewrite but the disabled ones; no config can disable a named
        # transformer, so the backend runs the saved graph as it is
        level = "disable"
    if level in GRAPH_LEVELS:
        config.optimization.graph.level = GRAPH_LEVELS[level]
    threads = session["intra_op_num_threads"]
    _parameter(config, "intra_op_thread_count", "0" if threads == "auto" else str(int(threads)))
    _parameter(config, "inter_op_thread_count", str(int(session["inter_op_num_threads"])))
    for name, options in runtime["providers"]:
        if name == "CUDAExecutionProvider":
            accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="cuda")
            for key, value in sorted(options.items()):
                if key != "device_id":   # the instance group's device
                    accelerator.parameters[key] = str(value)
        elif name == "TensorrtExecutionProvider":
            accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            if options.get("trt_fp16_enable") in ("1", "True", "true", True):
                accelerator.parameters["precision_mode"] = "FP16"
            for position in ("min", "opt", "max"):  # every profile: onnxruntime reads an input named again as the next
                accelerator.parameters[f"trt_profile_{position}_shapes"] = ",".join(
                    f"{n}:{'x'.join(str(d) for d in s)}" for i in range(len(io.profiles))
                    for n, s in io.shapes(i, position).items())


def _parameter(config: Any, key: str, value: str) -> None:
    config.parameters[key].string_value = value


# --- warm-up ------------------------------------------------------------------------------------------------

def warmup_requests(settings: ServeSettings, io: IOSpec) -> list[tuple[str, int, dict[str, tuple[int, ...]]]]:
    """(name, batch_size, full input shapes) of each warm-up request: the smallest and the largest batch (the
    profile's min and max shapes where the model is not batched), other dims at the profile's opt."""
    if settings.max_batch_size:
        low = max(settings.batch_range[0], 1)
        sizes = sorted({low, settings.max_batch_size})
        return [(f"batch_{b}", b, io.shapes(0, "opt", batch=1)) for b in sizes]
    return [(f"{position}_shapes", 1, io.shapes(0, position)) for position in ("min", "max")]


def _warmup_entry(config: Any, name: str, batch: int, shapes: dict, io: IOSpec, inputs: list[TensorFacts],
                  settings: ServeSettings) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    entry = config.model_warmup.add(name=name, batch_size=batch)
    types = {t.name: t.data_type for t in inputs}
    for tensor in io.inputs:
        spec = entry.inputs[tensor.name]
        spec.data_type = pb.DataType.Value(types[tensor.name])
        spec.dims.extend(_without_batch(shapes[tensor.name], settings))
        if tensor.is_int or tensor.values is not None or tensor.dtype == "string":
            spec.input_data_file = warmup_file(name, tensor.name)   # inside its range: random ints are not
        else:
            spec.random_data = True


def warmup_file(request: str, input_name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in input_name)
    return f"{request}__{safe}"


def warmup_data(settings: ServeSettings, io: IOSpec) -> dict[str, bytes]:
    """The data files of the integer, enum-like and string inputs' warm-up (one sample where batched: Triton
    repeats it batch_size times), drawn inside each input's range."""
    rng = np.random.default_rng(WARMUP_SEED)
    files = {}
    for name, _, shapes in warmup_requests(settings, io):
        sizes = io.dim_sizes(shapes)
        for tensor in io.inputs:
            if not (tensor.is_int or tensor.values is not None or tensor.dtype == "string"):
                continue
            array = random_array(rng, tensor, shapes[tensor.name], sizes)
            if settings.max_batch_size:
                array = array[0]
            files[warmup_file(name, tensor.name)] = _raw(array)
    return files


def _raw(array: np.ndarray) -> bytes:
    """Triton's raw layout: row-major bytes; strings each as a 4-byte little-endian length, then the bytes."""
    if array.dtype == object:
        out = bytearray()
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode()
            out += len(data).to_bytes(4, "little") + data
        return bytes(out)
    return np.ascontiguousarray(array).tobytes()


# --- the twin and the text ----------------------------------------------------------------------------------

def twin_config(real: Any, engine_file: str, runtime_file: str | None) -> Any:
    """The real config on the Python backend (TWIN_MODEL runs onnxruntime on `engine_file` with the runtime
    settings in `runtime_file`): everything Triton checks of IO, batching, instances and warm-up is the same."""
    from tritonclient.grpc import model_config_pb2 as pb

    twin = pb.ModelConfig()
    twin.CopyFrom(real)
    twin.ClearField("platform")
    twin.backend = "python"
    twin.ClearField("optimization")
    twin.ClearField("parameters")
    _parameter(twin, "engine_file", engine_file)
    if runtime_file:
        _parameter(twin, "runtime_settings", runtime_file)
    return twin


def to_text(config: Any) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)
