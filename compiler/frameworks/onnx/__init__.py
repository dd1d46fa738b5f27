"""The ONNX adapter: a file from anywhere is imported (importer.py: repairs, external weights) instead of
trained and exported, and the original file itself is verification's reference."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from compiler.frameworks.onnx.importer import import_file

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec


class OnnxAdapter:
    name = "onnx"
    reference_is_file = True
    label = "ONNX recipes"
    packages: tuple[str, ...] = ()
    train_precisions: tuple[str, ...] = ()       # nothing is trained
    multi_process_training = False
    input_layouts = ("nchw", "nhwc")
    exporter_packages: dict[str, str] = {}

    def export(self, cfg: DictConfig, io: IOSpec, source: Path, out: Path, plan: Any) -> list[str]:
        return import_file(source, out, io, plan)

    @contextlib.contextmanager
    def math_mode(self, tf32: bool) -> Iterator[None]:
        yield  # onnxruntime's math mode is a session option (backends/providers.py), not a global

    def world_size(self, train_cfg: Any) -> int:
        return 1


ADAPTER = OnnxAdapter()
