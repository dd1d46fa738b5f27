"""Polygraphy runners for each artifact of a compile, so one Comparator can line them all up."""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

Predict = Callable[[np.ndarray], np.ndarray]


class CallableRunner(BaseRunner):
    """A framework model (torch, Keras) seen through Polygraphy's runner interface.

    Polygraphy's own PytRunner moves inputs to CUDA, and its TF runner is for TF1 graphs,
    so the framework reference gets this thin adapter around a predict function.
    """

    def __init__(self, name: str, predict: Predict, input_name: str, output_name: str, sample_shape, dtype=np.float32):
        super().__init__(name=name, prefix="framework-runner")
        self._predict = predict
        self._input_name, self._output_name = input_name, output_name
        self._metadata = TensorMetadata().add(input_name, dtype, ["batch", *sample_shape])

    def activate_impl(self) -> None:
        pass

    def get_input_metadata_impl(self) -> TensorMetadata:
        return self._metadata

    def infer_impl(self, feed_dict: dict) -> OrderedDict:
        start = time.perf_counter()
        out = self._predict(feed_dict[self._input_name])
        self.inference_time = time.perf_counter() - start
        return OrderedDict([(self._output_name, np.asarray(out))])

    def deactivate_impl(self) -> None:
        pass


def framework_predictor(cfg: Any, artifact: Path) -> Predict:
    """The trained framework model as a numpy -> numpy function (inference mode)."""
    if cfg.framework.value == "torch":
        from compiler.stages import train_torch

        module = train_torch.load_trained(cfg, artifact)
        return lambda x: train_torch.predict(module, x)
    from compiler.stages import train_keras

    keras_model = train_keras.load_trained(artifact)
    return lambda x: train_keras.predict(keras_model, x, cfg)


def onnx_runner(name: str, path: Path, engine_cfg: Any) -> BaseRunner:
    """An onnxruntime runner over an ONNX file with graph optimisation off, to see the file as written."""
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from compiler.backends.onnxruntime import load_session

    return OnnxrtRunner(lambda: load_session(path, engine_cfg, optimization_level="disable"), name=name)


def engine_runner(backend: str, path: Path, engine_cfg: Any) -> BaseRunner:
    if backend == "tensorrt":
        from compiler.backends.tensorrt import runner

        return runner(path)
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from compiler.backends.onnxruntime import load_session

    return OnnxrtRunner(lambda: load_session(path, engine_cfg), name="engine")
