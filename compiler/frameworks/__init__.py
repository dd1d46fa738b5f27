"""One adapter per framework (torch, keras, onnx) behind one small protocol: the stages and verification call
the adapter, never a framework's own modules, and each decision about a framework (how it trains, saves,
loads, predicts, exports, which device its reference runs on, its math-mode globals) lives in its package.

Layout: `frameworks/<name>/__init__.py` holds the adapter (`ADAPTER`); beside it, `builder.py` turns the
recipe's layer list into the native model, `fit.py` trains it, `export.py` writes ONNX, and what else the
framework needs (torch: `runtime.py` for inference, `ddp.py` for data-parallel training; `models.py`: models a
recipe's factory may name). `onnx` only imports a file (`importer.py`): its reference is the file itself.
Importing this package imports no framework; an adapter imports its framework when a method runs.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, Iterator, Protocol

from compiler.numerics import MathMode

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec

NAMES = ("torch", "keras", "onnx")
# a recipe's `framework` -> the distributions whose versions key what it trains, exports and times
TOOLS = {"torch": ("torch",), "tensorflow": ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx"), "onnx": ()}
_MODULES = {"torch": "torch", "keras": "tensorflow", "onnx": "onnxruntime"}  # whose import makes an adapter live


class Adapter(Protocol):
    """What every framework does: bring the model to ONNX, and say its math-mode globals and processes."""

    name: str
    reference_is_file: bool   # onnx: the original file is the reference, there is no framework model
    # what lint checks a recipe of this framework against (lint.py asks these, never the framework's name)
    label: str                            # how messages name the framework's recipes ("Keras recipes")
    packages: tuple[str, ...]             # distributions its recipes need beyond the core install
    train_precisions: tuple[str, ...]     # train.precision values it trains in
    multi_process_training: bool          # train.devices/nnodes beyond 1
    input_layouts: tuple[str, ...]        # export.input_layout values its models take
    exporter_packages: dict[str, str]     # export.exporter -> the distribution that exporter needs

    def export(self, cfg: DictConfig, io: IOSpec, source: Path, out: Path, plan: Any) -> list[str]:
        """Write out (ONNX) from the trained artifact or the file; return the repairs made on the way."""

    def math_mode(self, tf32: bool) -> ContextManager[None]:
        """Set the framework's TF32 globals for a block and restore them after (numerics.MathMode)."""

    def world_size(self, train_cfg: Any) -> int:
        """How many processes training runs in (their results differ from one process's)."""


class Trainable(Adapter, Protocol):
    """A framework with a model of its own (torch, keras): trained, saved, loaded and run as the reference."""

    def train(self, cfg: DictConfig, io: IOSpec, work_dir: Path, log: Any) -> tuple[str, dict]:
        """Fit the recipe's model, save it in work_dir: (artifact name, training info)."""

    def save_as_built(self, cfg: DictConfig, io: IOSpec, work_dir: Path) -> tuple[str, dict]:
        """Save the factory's model untrained (data.source=none): (artifact name, info)."""

    def export(self, cfg: DictConfig, io: IOSpec, source: Path, out: Path, plan: Any) -> list[str]:
        """Write out (ONNX) from the trained artifact or the file; return the repairs made on the way."""

    def load(self, cfg: DictConfig, io: IOSpec, artifact: Path, gpu: bool) -> Any:
        """The trained model for inference, on the GPU when the engine runs on one and the framework sees it."""

    def predict(self, model: Any, feed: dict, io: IOSpec) -> dict:
        """Outputs by name for a feed of named arrays in the engine's layout."""

    def math_mode(self, tf32: bool) -> ContextManager[None]:
        """Set the framework's TF32 globals for a block and restore them after (numerics.MathMode)."""

    def world_size(self, train_cfg: Any) -> int:
        """How many processes training runs in (their results differ from one process's)."""


def adapter(framework: str) -> Any:
    """The adapter of a recipe's `framework` (torch, tensorflow or onnx): a Trainable, or for onnx an Adapter."""
    name = "keras" if framework == "tensorflow" else framework
    return importlib.import_module(f"compiler.frameworks.{name}").ADAPTER


def trainable(framework: str) -> Trainable:
    """The adapter of a framework with a model of its own (lint keeps onnx recipes from training)."""
    found = adapter(framework)
    if found.reference_is_file:
        raise TypeError(f"framework {framework!r} has no model of its own to train, save or run")
    return found


def loaded() -> list[Adapter]:
    """The adapters whose framework this process has imported already (touching no other)."""
    return [adapter(name) for name in NAMES if _MODULES[name] in sys.modules and name != "onnx"]


@contextlib.contextmanager
def in_math_mode(mode: MathMode) -> Iterator[None]:
    """Set the loaded frameworks' TF32 globals to `mode` for the block, and restore them after it. Only frameworks
    already imported are touched: this never imports torch or TensorFlow; each one's globals are its adapter's to
    set (`math_mode`). A mode whose `tf32` is None leaves them as they are (a framework's own defaults)."""
    with contextlib.ExitStack() as stack:
        for framework in loaded() if mode.tf32 is not None else ():
            stack.enter_context(framework.math_mode(mode.tf32))
        yield
