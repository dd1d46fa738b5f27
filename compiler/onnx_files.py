"""ONNX files on disk: weights beside the model (external data), saving over 2 GB, and an artifact's files.

A model and the `.data` file(s) its initializers point to are one artifact: they are hashed,
cached and placed together. External locations are resolved against the model's folder and may
not escape it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.heavy import onnx
from compiler.weights import save, weight_bytes

PROTOBUF_LIMIT = 2 << 30          # protobuf cannot serialise a message of 2 GiB or more


def external_locations(model: Any) -> list[str]:
    """The distinct external-data locations named by a model's initializers (as written in the file)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    seen: list[str] = []
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if location not in seen:
                seen.append(location)
    return seen


def escaping_locations(model_path: Path, locations: list[str]) -> list[str]:
    """Locations that leave the model's folder (absolute, or through '..'), or name no file."""
    folder = model_path.resolve().parent
    bad = []
    for location in locations:
        target = (folder / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(folder) or not target.is_file():
            bad.append(location)
    return bad


def artifact_files(path: Path) -> list[Path]:
    """The model file and the external-data files beside it (only what exists), model first."""
    if path.suffix != ".onnx":
        return [path]
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX after all: hash the bytes as they are
        return [path]
    folder = path.parent
    return [path] + [folder / loc for loc in external_locations(model) if (folder / loc).is_file()]


def save_model(model: Any, path: Path, external: bool | None = None) -> None:
    """Save `model` to `path`; with external data (`<name>.data` beside it) when asked or when it must. Each
    tensor is written once, streamed from where it lies (compiler/weights.py)."""
    if external is None:
        external = byte_size(model) >= PROTOBUF_LIMIT - (64 << 20)
    save(model, path, external)


def has_external_data(path: Path) -> bool:
    return len(artifact_files(path)) > 1


def byte_size(model: Any) -> int:
    """Serialized size, counted per tensor (in memory or on disk) so it works past protobuf's 2 GiB limit."""
    return weight_bytes(model) + sum(n.ByteSize() for n in model.graph.node)
