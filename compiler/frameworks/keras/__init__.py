"""The Keras adapter (TensorFlow recipes): layer-list recipes and factory models, trained with compile/fit,
saved as `model.keras` (loaded in safe mode), exported through tf2onnx's from_function."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec


class KerasAdapter:
    name = "keras"
    reference_is_file = False
    label = "Keras recipes"
    packages = ("tensorflow", "tf2onnx")
    train_precisions = ("fp32",)
    multi_process_training = False              # multi-device training is torch-only for now
    input_layouts = ("nchw", "nhwc")
    exporter_packages: dict[str, str] = {}

    def train(self, cfg: DictConfig, io: IOSpec, work_dir: Path, log: Any) -> tuple[str, dict]:
        from compiler.frameworks.keras.fit import train

        return train(cfg, io, work_dir, log)

    def save_as_built(self, cfg: DictConfig, io: IOSpec, work_dir: Path) -> tuple[str, dict]:
        import keras

        from compiler.frameworks.keras.builder import build_keras_model

        keras.utils.set_random_seed(cfg.seed)
        model = build_keras_model(cfg.model, io)
        model.save(work_dir / "model.keras")
        return "model.keras", {"parameters": int(model.count_params())}

    def export(self, cfg: DictConfig, io: IOSpec, source: Path, out: Path, plan: Any) -> list[str]:
        from compiler.frameworks.keras.export import export

        export(cfg, io, source, out)
        return []

    def load(self, cfg: DictConfig, io: IOSpec, artifact: Path, gpu: bool) -> Any:
        from compiler.frameworks.keras.fit import load_trained

        return load_trained(artifact)  # TensorFlow places it on the GPU when it sees one

    def predict(self, model: Any, feed: dict, io: IOSpec) -> dict:
        from compiler.frameworks.keras.fit import predict

        return predict(model, feed, io)

    @contextlib.contextmanager
    def math_mode(self, tf32: bool) -> Iterator[None]:
        import tensorflow as tf

        before = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
        try:
            yield
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(before)

    def world_size(self, train_cfg: Any) -> int:
        return 1


ADAPTER = KerasAdapter()
