"""Polygraphy runners for each artifact of a compile, so one Comparator can line them all up."""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata
from polygraphy.util import array as _polygraphy_array

from compiler.backends.tensorrt import runner
from compiler.frameworks import in_math_mode, trainable
from compiler.numerics import STRICT_FP32

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec
    from compiler.plan import EnginePlan

Predict = Callable[[dict], dict]


def _is_torch_if_loaded(obj: Any) -> bool:
    """Polygraphy's own check imports torch (~2 s) to test every array; nothing is a torch.Tensor
    unless torch is already loaded, so a TensorFlow or ONNX compile, and the engine's latency, never import it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


_polygraphy_array.is_torch = _is_torch_if_loaded


class CallableRunner(BaseRunner):
    """A framework model (torch, Keras) seen through Polygraphy's runner interface.

    Polygraphy's own PytRunner moves inputs to CUDA, and its TF runner is for TF1 graphs,
    so the framework reference gets this thin adapter around a predict function.
    """

    def __init__(self, name: str, predict: Predict, io: IOSpec):
        super().__init__(name=name, prefix="framework-runner")
        self._predict = predict
        self._metadata = TensorMetadata()
        for t in io.inputs:
            self._metadata.add(t.name, np.dtype(t.dtype if t.dtype != "bfloat16" else "float32"), list(t.shape))

    def activate_impl(self) -> None:
        pass

    def get_input_metadata_impl(self) -> TensorMetadata:
        return self._metadata

    def infer_impl(self, feed_dict: dict) -> OrderedDict:
        start = time.perf_counter()
        out = self._predict(feed_dict)
        self.inference_time = time.perf_counter() - start
        return OrderedDict((k, np.asarray(v)) for k, v in out.items())

    def deactivate_impl(self) -> None:
        pass


def framework_predictor(cfg: DictConfig, io: IOSpec, artifact: Path, plan: EnginePlan = None) -> Predict:
    """The trained framework model as a feed dict -> outputs dict function (inference mode), in strict fp32
    (numerics.py), on the GPU when the engine runs on one (plan.gpu) and the framework sees it."""
    framework = trainable(cfg.framework.value)
    model = framework.load(cfg, io, artifact, gpu=plan is not None and plan.gpu)

    def predict(feed: dict) -> dict:
        with in_math_mode(STRICT_FP32):
            return framework.predict(model, feed, io)
    return predict


def _tensor_runner(session_loader: Callable, name: str) -> BaseRunner:
    """Polygraphy's onnxruntime runner, passing on tensor outputs only: a model's sequence or map outputs
    (ZipMap's, say) break Polygraphy's comparator, and the report says they were not compared."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    class TensorOutputs(OnnxrtRunner):
        def infer(self, feed_dict, *args, **kwargs):  # infer, not infer_impl: Polygraphy warns on every direct call
            if any(np.asarray(v).dtype.kind in "OU" for v in feed_dict.values()):
                kwargs["check_inputs"] = False  # Polygraphy's check has no dtype for ONNX strings; onnxruntime checks
            out = super().infer(feed_dict, *args, **kwargs)
            return OrderedDict((k, v) for k, v in out.items() if isinstance(v, np.ndarray))

    return TensorOutputs(session_loader, name=name)


def onnx_runner(name: str, path: Path, plan: EnginePlan, optimization_level: str = "disable",
                timed: bool = True) -> BaseRunner:
    """An onnxruntime runner over an ONNX file with graph optimisation off, to see the file as written;
    `timed=False` for one that only compares (no prepacking: backends/onnxruntime.without_prepacking)."""
    from compiler.backends.onnxruntime import load_session

    return _tensor_runner(lambda: load_session(path, plan, optimization_level=optimization_level, mode=STRICT_FP32,
                                               prepack=timed), name)


def engine_runner(plan: EnginePlan, path: Path, intra_op_threads: int | None = None) -> BaseRunner:
    """The engine as the plan's backend runs it (onnxruntime: with its runtime settings; captured as CUDA graphs
    where the plan says so, as it ships)."""
    if plan.nvidia:
        return runner(path, plan.backend)
    from compiler.backends.onnxruntime import load_session

    load = lambda: load_session(path, plan, intra_op_threads=intra_op_threads)  # noqa: E731
    return _graph_runner(load, "engine") if plan.cuda_graph else _tensor_runner(load, "engine")


def _graph_runner(session_loader: Callable, name: str) -> BaseRunner:
    """Polygraphy's onnxruntime runner over an engine captured as CUDA graphs (backends/onnxruntime.py)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from compiler.backends.onnxruntime import CudaGraphSession

    class CapturedGraphs(OnnxrtRunner):
        def activate_impl(self):
            super().activate_impl()
            self.graphs = CudaGraphSession(self.sess)

        def infer_impl(self, feed_dict):
            start = time.perf_counter()
            out = self.graphs.run({k: np.asarray(v) for k, v in feed_dict.items()})
            self.inference_time = time.perf_counter() - start
            return OrderedDict(out)

    return CapturedGraphs(session_loader, name=name)
