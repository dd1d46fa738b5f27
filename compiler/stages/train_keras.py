"""Keras training: compile/fit with the recipe's optimizer, loss, epochs, batch and seed."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from compiler.data.sources import load_dataset  # noqa: E402
from compiler.errors import StageError  # noqa: E402
from compiler.model.keras_builder import build_keras_model  # noqa: E402
from compiler.stages import StageContext, StageResult  # noqa: E402

_OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
               "rmsprop": keras.optimizers.RMSprop}


def to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def _optimizer(opt_cfg) -> keras.optimizers.Optimizer:
    name = opt_cfg.name.value
    kwargs: dict[str, Any] = {"learning_rate": opt_cfg.lr}
    if opt_cfg.weight_decay:
        kwargs["weight_decay"] = opt_cfg.weight_decay
    if name in ("sgd", "rmsprop"):
        kwargs["momentum"] = opt_cfg.momentum
    return _OPTIMIZERS[name](**kwargs)


class _EpochLog(keras.callbacks.Callback):
    """One log line per epoch (Keras' own progress bar is shown on a terminal only)."""

    def __init__(self, log, epochs: int):
        super().__init__()
        self._log, self._epochs = log, epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self._log.info("epoch %d/%d  loss %.4f  accuracy %.4f  test accuracy %.4f", epoch + 1, self._epochs,
                       logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
                       logs.get("val_accuracy", float("nan")))


def train(ctx: StageContext) -> StageResult:
    cfg, tcfg = ctx.cfg, ctx.cfg.train
    if tcfg.precision.value != "fp32":
        raise StageError("train", f"train.precision={tcfg.precision.value} is implemented for torch recipes only",
                         fix="use train.precision=fp32 for TensorFlow recipes")
    keras.utils.set_random_seed(cfg.seed)
    data = load_dataset(cfg.data, cfg.model.input.shape, cfg.seed)
    model = build_keras_model(cfg.model, cfg.model.input.shape)
    model.compile(optimizer=_optimizer(tcfg.optimizer),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    verbose = 1 if tcfg.progress and sys.stderr.isatty() else 0
    fit = model.fit(to_nhwc(data.x_train), data.y_train, epochs=tcfg.epochs, batch_size=tcfg.batch_size,
                    validation_data=(to_nhwc(data.x_test), data.y_test), shuffle=True, verbose=verbose,
                    callbacks=[_EpochLog(ctx.log, tcfg.epochs)])
    h = fit.history
    history = [{"epoch": i + 1, "loss": float(h["loss"][i]), "accuracy": float(h["accuracy"][i]),
                "val_accuracy": float(h["val_accuracy"][i])} for i in range(len(h["loss"]))]
    bad = next((e for e in history if not math.isfinite(e["loss"])), None)
    if bad:
        raise StageError("train", f"the loss became {bad['loss']} at epoch {bad['epoch']}",
                         fix="lower train.optimizer.lr or check the data for NaN/inf")
    if tcfg.recompute_bn_stats:
        _recompute_bn_stats(model, to_nhwc(data.x_train), tcfg.batch_size)
        history[-1]["val_accuracy_bn_recomputed"] = float(model.evaluate(to_nhwc(data.x_test), data.y_test,
                                                                          verbose=0, return_dict=True)["accuracy"])
    model.save(ctx.work_dir / "model.keras")
    return StageResult("model.keras", {
        "history": history, "device": "cpu" if not _has_gpu() else "gpu", "precision": "fp32",
        "train_samples": len(data.x_train), "test_samples": len(data.x_test),
        "parameters": int(model.count_params()),
        "final_val_accuracy": history[-1]["val_accuracy"] if history else None,
    })


def _recompute_bn_stats(model: keras.Model, x: np.ndarray, batch_size: int) -> None:
    """Cumulative average of batch statistics over one pass of the training set, as torch's update_bn does."""
    layers = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
    for step, start in enumerate(range(0, len(x), batch_size)):
        for layer in layers:  # moving = m*moving + (1-m)*batch with m = step/(step+1): a running mean
            layer.momentum = step / (step + 1)
        model(x[start:start + batch_size], training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def load_trained(path: Path) -> keras.Model:
    """safe_mode: a .keras file cannot smuggle in arbitrary Python (lambdas) when loaded."""
    return keras.models.load_model(path, safe_mode=True, compile=False)


def predict(model: keras.Model, x: np.ndarray, cfg: Any) -> np.ndarray:
    """x in the engine's input layout (NCHW unless export.input_layout=nhwc)."""
    if cfg.export.input_layout.value == "nchw":
        x = to_nhwc(x)
    return np.asarray(model(x, training=False))
