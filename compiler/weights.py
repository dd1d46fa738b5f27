"""How the pipeline sees weights: large tensors stay on disk as references and are read one at a time.

A model is loaded without its external data (`load`): each external initializer keeps its location, offset and
length, the location made absolute in memory, so rebuilding the graph (every surgery pass does) copies a few
bytes per weight, not the weight. A pass that needs a weight's values reads that tensor alone (`read`, through
`DiskValues` in onnx-graphsurgeon graphs). A tensor a pass creates above SPILL_BYTES is written to a spill file
as soon as the pass has run (`spill` into the stage's `Spill`), so new weights do not pile up in memory either. `save`
writes each tensor once, streamed into the artifact's one `.data` file at page-aligned offsets (which
onnxruntime maps instead of reading).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

from compiler.file_hashes import same_content
from compiler.heavy import gs, np, onnx


EXTERNAL_THRESHOLD = 1 << 10   # with external data, tensors of 1 KiB and up go to the .data file
ALIGN = 4096                   # offsets in a .data file: onnxruntime maps page-aligned tensors
SPILL_BYTES = 1 << 20          # new tensors this large go to the spill file at once (with a spill folder set)
_CHUNK = 64 << 20              # bytes per copy step when streaming a tensor between files
LARGE_FOLD_BYTES = 64 << 20    # constant folding leaves nodes that read a constant this large (report: which)


def tensors(model: Any) -> Iterator[Any]:
    """Every tensor of a model: initializers, Constant and attribute tensors, in every subgraph."""
    return onnx.external_data_helper._get_all_tensors(model)


def is_external(tensor: Any) -> bool:
    """On disk: marked external and naming where. (graphsurgeon marks a constant it rebuilt from values external
    when it was so on import, with its bytes inline: that one is in memory.)"""
    return tensor.data_location == onnx.TensorProto.EXTERNAL and any(e.key == "location" for e in tensor.external_data)


def _in_memory(tensor: Any) -> None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL and not is_external(tensor):
        tensor.data_location = onnx.TensorProto.DEFAULT


def _info(tensor: Any) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


def external_bytes(tensor: Any) -> int:
    """A tensor's size on disk (its declared length, or what its dims and type take)."""
    info = _info(tensor)
    if "length" in info:
        return int(info["length"])

    return int(np.prod(tensor.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def weight_bytes(model: Any) -> int:
    """The model's weights, in memory and on disk together."""
    return sum(external_bytes(t) if is_external(t) else len(t.raw_data) for t in tensors(model))


def load(path: Path) -> Any:
    """The model with its external tensors left on disk, their locations made absolute (resolved against the
    model's folder, as onnx and onnxruntime resolve them)."""
    model = onnx.load(str(path), load_external_data=False)
    folder = Path(path).resolve().parent
    for tensor in tensors(model):
        if is_external(tensor):
            _set_location(tensor, str(folder / _info(tensor)["location"]))
    return model


def _set_location(tensor: Any, location: str, offset: int | None = None, length: int | None = None) -> None:
    info = {**_info(tensor), "location": location}
    if offset is not None:
        info.update(offset=str(offset), length=str(length))
    del tensor.external_data[:]
    for key, value in info.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def read(tensor: Any) -> "Any":
    """A tensor's values as a numpy array, reading only its own bytes when it is on disk."""
    if not is_external(tensor):
        return onnx.numpy_helper.to_array(tensor)
    data = _bytes_on_disk(tensor)
    loaded = onnx.TensorProto()
    loaded.CopyFrom(tensor)
    del loaded.external_data[:]
    loaded.data_location = onnx.TensorProto.DEFAULT
    loaded.raw_data = data
    return np.asarray(onnx.numpy_helper.to_array(loaded))


def _bytes_on_disk(tensor: Any) -> bytes:
    info = _info(tensor)
    with open(info["location"], "rb") as f:
        f.seek(int(info.get("offset", 0)))
        return f.read(external_bytes(tensor))


@functools.cache
def _disk_values() -> type:
    """DiskValues: onnx-graphsurgeon's lazy values for a tensor on disk, its shape and dtype without reading it, its
    values read on demand (graphsurgeon's own reads external data into the proto, keeping it in memory). Defined on
    first use, since it subclasses a graphsurgeon class (compiler/heavy.py)."""
    class DiskValues(gs.ir.tensor.LazyValues):
        def load(self):
            return read(self.tensor)

    return DiskValues


def values_on_disk(constant: Any) -> bool:
    """Whether a graphsurgeon constant's values are still on disk (read on demand, never held in memory)."""
    return isinstance(constant._values, _disk_values())


def nbytes(constant: Any) -> int:
    """A graphsurgeon constant's size, without reading it."""
    return int(constant._values.nbytes)


def raw_bytes(array: Any) -> memoryview:
    """An array's bytes as they lie, for hashing and comparing: ml_dtypes' fp8, int4 and float4 arrays refuse the
    buffer protocol ("cannot include dtype '4' in a buffer"), so every fixed-size dtype is seen as bytes."""
    array = np.ascontiguousarray(array)
    if array.dtype == object:  # strings: their text
        return memoryview(repr(array.tolist()).encode())
    return array.reshape(-1).view(np.uint8).data


def digest(constant: Any, prefix: int | None = None) -> str:
    """sha256 of a graphsurgeon constant's bytes (its first `prefix` bytes only, when given: a cheap test that
    tells most different weights apart): read in chunks from disk for a DiskValues one."""
    h = hashlib.sha256()
    if values_on_disk(constant):
        info = _info(constant._values.tensor)
        with open(info["location"], "rb") as f:
            f.seek(int(info.get("offset", 0)))
            left = external_bytes(constant._values.tensor)
            left = left if prefix is None else min(prefix, left)
            while left:
                chunk = f.read(min(_CHUNK, left))
                h.update(chunk)
                left -= len(chunk)
    else:
        data = raw_bytes(constant.values)
        h.update(data if prefix is None else data[:prefix])
    return h.hexdigest()


def on_disk_in(graph: Any, found: list | None = None) -> list:
    """Give every on-disk constant of a graphsurgeon graph (and its subgraphs) DiskValues; returns them as
    (constant, its DiskValues) for `still_on_disk`."""
    found = [] if found is None else found
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and type(tensor._values) is gs.ir.tensor.LazyValues \
                and is_external(tensor._values.tensor):
            tensor._values = _disk_values()(tensor._values.tensor)
            found.append((tensor, tensor._values))
    for node in graph.nodes:
        for value in node.attrs.values():
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, gs.Graph):
                    on_disk_in(sub, found)
    return found


RESTORE_BYTES = 1 << 20   # a weight read by a pass and left as it was is compared with its file up to this size


def still_on_disk(on_disk: list) -> None:
    """Weights that a pass read (graphsurgeon keeps what it read in memory) and left as they were point at their
    file again, so that saving copies nothing new for them and the file can stay whole (weights.save)."""
    for constant, disk in on_disk:
        values = constant._values
        if values is disk or not isinstance(values, np.ndarray) or values.nbytes > RESTORE_BYTES:
            continue
        original = disk.load()
        if values.dtype == original.dtype and values.shape == original.shape and np.array_equal(values, original):
            constant._values = disk


@dataclass
class Spill:
    """A stage's open spill file: tensors moved out of memory while the stage runs (`spilling_to`)."""

    file: IO[bytes]
    path: str

    def put(self, tensor: Any, data: bytes) -> None:
        """Append `data` and make `tensor` an external reference to it."""
        _to_external(tensor, self.path, _append(self.file, data), len(data))


@contextlib.contextmanager
def spilling_to(folder: Path) -> Iterator[Spill]:
    """A spill file `folder/spill.data`, open while the block runs, for `spill` and `fp16_streamed`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spill.data"
    with open(path, "ab") as f:
        yield Spill(f, str(path.resolve()))


def spill(model: Any, into: Spill | None = None) -> None:
    """Mark the model's rebuilt tensors as in memory, and move those of SPILL_BYTES and up `into` the spill file."""
    for tensor in tensors(model):
        _in_memory(tensor)
        if into is not None and not is_external(tensor) and len(tensor.raw_data) >= SPILL_BYTES:
            into.put(tensor, tensor.raw_data)
    if into is not None:
        into.file.flush()


def _append(f: Any, data: bytes) -> int:
    offset = f.seek(0, os.SEEK_END)
    pad = -offset % ALIGN
    if pad:
        f.write(b"\0" * pad)
    f.write(data)
    return offset + pad


def _to_external(tensor: Any, location: str, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    _set_location(tensor, location, offset, length)


def _copy_range(source: str, offset: int, length: int, target: Any) -> None:
    """Bytes [offset, offset + length) of `source` appended to `target`: in the kernel where it can (no copy
    through this process, a reflink on file systems that share blocks), else in chunks."""
    target.flush()
    with open(source, "rb") as src:
        out, start = target.fileno(), target.tell()
        try:
            done = 0
            while done < length:
                n = os.copy_file_range(src.fileno(), out, length - done, offset + done, start + done)
                if n == 0:
                    raise OSError(f"{source} ends before offset {offset} + {length}")
                done += n
            target.seek(start + length)
            return
        except (AttributeError, OSError):
            target.seek(start)
            target.truncate()
        src.seek(offset)
        while length:
            chunk = src.read(min(_CHUNK, length))
            if not chunk:
                raise OSError(f"{source} ends before offset {offset} + {length}")
            target.write(chunk)
            length -= len(chunk)


def inline(model: Any) -> None:
    """Read every on-disk tensor back into the model (for a model saved as one file)."""
    for tensor in tensors(model):
        if is_external(tensor):
            data = _bytes_on_disk(tensor)
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.raw_data = data


def save(model: Any, path: Path, external: bool) -> None:
    """Write `model` to `path`: as one file, or with every tensor of EXTERNAL_THRESHOLD and up streamed once into
    `<name>.data` beside it. The model's on-disk tensors then point at that file (absolute, in memory)."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    if not external:
        inline(model)
        data.unlink(missing_ok=True)
        onnx.save_model(model, str(path))
        return
    tmp = data.with_name(f".{data.name}.tmp-{os.getpid()}")
    moved = []
    whole = _mostly_one_file(model)
    if whole:  # the weights are (nearly all) one file's as they lie: one kernel copy, their offsets kept
        shutil.copyfile(whole, tmp)
    with open(tmp, "ab" if whole else "wb") as f:
        for tensor in tensors(model):
            if whole and is_external(tensor) and _info(tensor)["location"] == whole:
                moved.append((tensor, int(_info(tensor).get("offset", 0)), external_bytes(tensor)))
            elif is_external(tensor):
                info = _info(tensor)
                offset = _append(f, b"")
                _copy_range(info["location"], int(info.get("offset", 0)), external_bytes(tensor), f)
                moved.append((tensor, offset, external_bytes(tensor)))
            else:
                if not tensor.HasField("raw_data") and _typed_bytes(tensor) >= EXTERNAL_THRESHOLD:
                    tensor.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor), tensor.name))
                if len(tensor.raw_data) >= EXTERNAL_THRESHOLD:
                    length = len(tensor.raw_data)
                    moved.append((tensor, _append(f, tensor.raw_data), length))
                    tensor.ClearField("raw_data")
    for tensor, offset, length in moved:  # the proto on disk names the file beside it
        _to_external(tensor, data.name, offset, length)
    onnx.save_model(model, str(path))
    os.replace(tmp, data)
    if whole and os.path.getsize(data) == os.path.getsize(whole):  # nothing appended: the same bytes
        same_content(Path(whole), data)
    for tensor, offset, length in moved:  # and in memory, the file itself
        _set_location(tensor, str(data.resolve()), offset, length)


def save_with_locations(src: Path, dst: Path, renamed: dict[str, str]) -> None:
    """Copy the model file `src` to `dst` with its external tensors' locations renamed (`{old: new}`, names
    beside the model); the weights files themselves are not touched."""
    model = onnx.load(str(src), load_external_data=False)
    for tensor in tensors(model):
        if is_external(tensor) and _info(tensor)["location"] in renamed:
            _set_location(tensor, renamed[_info(tensor)["location"]])
    onnx.save_model(model, str(dst))


def _mostly_one_file(model: Any, share: float = 0.9) -> str | None:
    """The file that holds at least `share` of the model's on-disk bytes, when they all come from it and fill
    at least `share` of it: copying it whole beats copying its tensors one by one."""
    sources: dict[str, int] = {}
    for tensor in tensors(model):
        if is_external(tensor):
            location = _info(tensor)["location"]
            sources[location] = sources.get(location, 0) + external_bytes(tensor)
    if len(sources) != 1:
        return None
    location, used = next(iter(sources.items()))
    return location if os.path.getsize(location) * share <= used else None


def _typed_bytes(tensor: Any) -> int:
    """Bytes held in a tensor's typed fields (float_data, int64_data, ...), which onnx writes inline."""
    return sum(len(getattr(tensor, f)) * 8 for f in ("float_data", "int32_data", "int64_data", "double_data",
                                                      "uint64_data"))


SESSION_FOLDER_KEY = "session.model_external_initializers_file_folder_path"


def session_bytes(model: Any) -> tuple[bytes, str | None]:
    """The model serialised for `onnxruntime.InferenceSession(bytes)` without reading its weights: on-disk
    tensors named relative to their one folder, which onnxruntime is told through SESSION_FOLDER_KEY. Returns
    (bytes, folder or None); weights from several folders are read in instead."""
    folders = {str(Path(_info(t)["location"]).parent) for t in tensors(model) if is_external(t)}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if len(folders) != 1:
        inline(copy)
        return copy.SerializeToString(), None
    for tensor in tensors(copy):
        if is_external(tensor):
            _set_location(tensor, Path(_info(tensor)["location"]).name)
    return copy.SerializeToString(), folders.pop()


_FP16_CHUNK = 1 << 22   # elements per step of to_float16


def to_float16(values: Any, min_positive: float = 5.96e-08, max_finite: float = 65504.0) -> Any:
    """onnxruntime's `convert_np_to_float16`, element for element (sign and finiteness kept; a magnitude below
    `min_positive` becomes it, a finite one above `max_finite` becomes that), in one pass over chunks: its own
    makes a dozen full-size index arrays per weight (about 15 s and 2 GiB for one 8192x8192 fp32 weight)."""
    flat = np.ascontiguousarray(values).reshape(-1)
    out = np.empty(flat.shape, np.float16)
    for start in range(0, flat.size, _FP16_CHUNK):
        chunk = flat[start:start + _FP16_CHUNK]
        size = np.abs(chunk)
        chunk = np.where((size > 0) & (size < min_positive), np.copysign(np.float32(min_positive), chunk), chunk)
        chunk = np.where((size > max_finite) & np.isfinite(chunk), np.copysign(np.float32(max_finite), chunk), chunk)
        out[start:start + _FP16_CHUNK] = chunk
    return out.reshape(np.shape(values))


@contextlib.contextmanager
def fp16_streamed(into: Spill | None = None) -> Iterator[None]:
    """onnxruntime's float16 converter over a model whose weights are on disk: each fp32 weight it converts is
    read alone, cast and spilled `into` the spill file (it would otherwise mark the tensor fp16 and leave its fp32 bytes), and its
    value info comes from the dims (it would read the tensor for its shape)."""
    from onnxruntime.transformers import float16

    convert, value_info = float16.convert_tensor_float_to_float16, float16.make_value_info_from_tensor

    def convert_on_disk(tensor, min_positive_val=5.96e-08, max_finite_val=65504.0):
        if not (is_external(tensor) and tensor.data_type == onnx.TensorProto.FLOAT):
            return convert(tensor, min_positive_val, max_finite_val)
        half = to_float16(read(tensor), min_positive_val, max_finite_val).tobytes()
        tensor.data_type = onnx.TensorProto.FLOAT16
        if into is not None:
            into.put(tensor, half)
            into.file.flush()
        else:
            tensor.ClearField("data_location")
            del tensor.external_data[:]
            tensor.raw_data = half
        return tensor

    def value_info_from_dims(tensor):
        return onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))

    float16.convert_tensor_float_to_float16, float16.make_value_info_from_tensor = convert_on_disk, value_info_from_dims
    try:
        yield
    finally:
        float16.convert_tensor_float_to_float16, float16.make_value_info_from_tensor = convert, value_info
