"""Keras training: compile/fit with the recipe's optimizer, loss, epochs, batch and seed."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from compiler.data.sources import load_dataset  # noqa: E402
from compiler.errors import StageError  # noqa: E402
from compiler.frameworks.keras.builder import build_keras_model  # noqa: E402
from compiler.iospec import label_output, to_channels_last  # noqa: E402

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec

# a training of at most this many steps runs eagerly: tracing the train and test steps into graphs costs more than
# it saves there (MobileNetV2: 17 s traced against 4 s eager for 3 steps; an epoch of 23 steps, 25 s eager)
EAGER_MAX_STEPS = 16

_OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD,
               "rmsprop": keras.optimizers.RMSprop}


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


def keras_inputs(x: dict, io: IOSpec) -> list[np.ndarray] | np.ndarray:
    """Named samples (channels first) as Keras takes them: channels last, a list when there are several."""
    arrays = [to_channels_last(x[name]) for name in io.input_names]
    return arrays if len(arrays) > 1 else arrays[0]


def _labelled(model: keras.Model, io: IOSpec, label: str) -> keras.Model:
    """The model restricted to the output that labels score (the one trained); weights are shared."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs, model.outputs[io.output_names.index(label)])


def train(cfg: DictConfig, io: IOSpec, work_dir: Path, log: Any) -> tuple[str, dict]:
    """Fit the recipe's model and save it in work_dir: (artifact name, training info)."""
    tcfg = cfg.train
    if tcfg.precision.value != "fp32":
        raise StageError("train", f"train.precision={tcfg.precision.value} is implemented for torch recipes only",
                         fix="use train.precision=fp32 for TensorFlow recipes")
    keras.utils.set_random_seed(cfg.seed)
    data = load_dataset(cfg.data, io, cfg.seed)
    model = build_keras_model(cfg.model, io)
    trained = _labelled(model, io, label_output(cfg, io))
    steps = tcfg.epochs * math.ceil(len(data.y_train) / tcfg.batch_size)
    trained.compile(optimizer=_optimizer(tcfg.optimizer),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                    run_eagerly=steps <= EAGER_MAX_STEPS)
    verbose = 1 if tcfg.progress and sys.stderr.isatty() else 0
    x_train, x_test = keras_inputs(data.x_train, io), keras_inputs(data.x_test, io)
    fit = trained.fit(x_train, data.y_train, epochs=tcfg.epochs, batch_size=tcfg.batch_size,
                      validation_data=(x_test, data.y_test), shuffle=True, verbose=verbose,
                      callbacks=[_EpochLog(log, tcfg.epochs)])
    h = fit.history
    history = [{"epoch": i + 1, "loss": float(h["loss"][i]), "accuracy": float(h["accuracy"][i]),
                "val_accuracy": float(h["val_accuracy"][i])} for i in range(len(h["loss"]))]
    bad = next((e for e in history if not math.isfinite(e["loss"])), None)
    if bad:
        raise StageError("train", f"the loss became {bad['loss']} at epoch {bad['epoch']}",
                         fix="lower train.optimizer.lr or check the data for NaN/inf")
    if tcfg.recompute_bn_stats and _recompute_bn_stats(model, x_train, tcfg.batch_size):
        # Keras measured each epoch with its moving BatchNorm statistics; the final model re-estimates them
        for entry in history:
            entry["bn_stats"] = "moving (Keras)"
        history[-1]["val_accuracy_final_bn"] = float(trained.evaluate(x_test, data.y_test, verbose=0,
                                                                       return_dict=True)["accuracy"])
    model.save(work_dir / "model.keras")
    return "model.keras", {
        "history": history, "device": "cpu" if not _has_gpu() else "gpu", "precision": "fp32",
        "steps": steps, "execution": "eager" if trained.run_eagerly else "graph (tf.function)",
        "train_samples": len(data.y_train), "test_samples": len(data.y_test),
        "parameters": int(model.count_params()),
        "final_val_accuracy": history[-1]["val_accuracy"] if history else None,
    }


def _recompute_bn_stats(model: keras.Model, x: Any, batch_size: int) -> bool:
    """Cumulative average of batch statistics over one pass of the training set, as torch's update_bn does."""
    layers = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return False
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
    xs = x if isinstance(x, list) else [x]
    for step, start in enumerate(range(0, len(xs[0]), batch_size)):
        for layer in layers:  # moving = m*moving + (1-m)*batch with m = step/(step+1): a running mean
            layer.momentum = step / (step + 1)
        part = [a[start:start + batch_size] for a in xs]
        model(part if len(part) > 1 else part[0], training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    return True


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


def predict(model: keras.Model, feed: dict[str, np.ndarray], io: IOSpec) -> dict[str, np.ndarray]:
    """Outputs by name for a feed in the engine's layout (NCHW unless export.input_layout=nhwc)."""
    xs = [feed[t.name] if t.channels_last else to_channels_last(feed[t.name]) for t in io.inputs]
    result = model(xs if len(xs) > 1 else xs[0], training=False)
    outputs = list(result) if isinstance(result, (list, tuple)) else [result]
    return {name: np.asarray(out) for name, out in zip(io.output_names, outputs)}
