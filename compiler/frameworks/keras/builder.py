"""Builds a Keras model (channels-last inside Keras) from the same layer list as torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras

from compiler.model.factory import instantiate_factory
from compiler.model.layers import LayerSpec, activation_of, pair, parse_layers

if TYPE_CHECKING:
    from compiler.iospec import IOSpec


def _activation(name: str | None):
    if name == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=0.2)
    if name == "softmax":
        return keras.layers.Softmax(axis=-1)
    return keras.layers.Activation(name) if name else None


def _padded(x, args: dict[str, Any]):
    """Keras knows 'same'/'valid'; an explicit integer padding is a ZeroPadding2D first."""
    if args["padding"] in ("same", "valid"):
        return x, args["padding"]
    return keras.layers.ZeroPadding2D(int(args["padding"]))(x), "valid"


def _residual(x, filters: int, stride: int):
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, stride, padding="same", use_bias=False)(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(filters, 3, 1, padding="same", use_bias=False)(y)
    y = keras.layers.BatchNormalization()(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, stride, use_bias=False)(x)
        shortcut = keras.layers.BatchNormalization()(shortcut)
    return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))


def _apply(spec: LayerSpec, x):
    a = spec.args
    if spec.type == "conv2d":
        x, padding = _padded(x, a)
        x = keras.layers.Conv2D(a["filters"], pair(a["kernel"]), a["stride"], padding=padding)(x)
    elif spec.type == "depthwise_conv2d":
        x, padding = _padded(x, a)
        x = keras.layers.DepthwiseConv2D(pair(a["kernel"]), a["stride"], padding=padding,
                                         depth_multiplier=a["multiplier"])(x)
    elif spec.type in ("maxpool2d", "avgpool2d"):
        pool = keras.layers.MaxPooling2D if spec.type == "maxpool2d" else keras.layers.AveragePooling2D
        x = pool(pair(a["size"]), a["stride"] or pair(a["size"])[0])(x)
    elif spec.type == "global_avg_pool":
        x = keras.layers.GlobalAveragePooling2D()(x)
    elif spec.type == "batchnorm":
        x = keras.layers.BatchNormalization(epsilon=a["eps"], momentum=a["momentum"])(x)
    elif spec.type == "dropout":
        x = keras.layers.Dropout(a["rate"])(x)
    elif spec.type == "flatten":
        x = keras.layers.Flatten()(x)
    elif spec.type == "dense":
        x = keras.layers.Dense(a["units"])(x)
    elif spec.type == "residual":
        x = _residual(x, a["filters"], a["stride"])
    elif spec.type != "activation":
        raise AssertionError(f"no Keras builder for layer type {spec.type!r}")
    act = _activation(activation_of(spec))
    return act(x) if act is not None else x


def build_keras_model(model_cfg: Any, io: IOSpec) -> keras.Model:
    """The recipe's model as Keras (the layer list, or the allow-listed factory); Keras takes channels last."""
    if model_cfg.factory is not None:
        return instantiate_factory(model_cfg.factory)

    image = io.inputs[0]
    specs, problems = parse_layers(model_cfg.layers, list(image.data_shape(image.shape))[1:])
    assert not problems, problems
    inputs = keras.Input(image.keras_shape()[1:], name=image.name)
    x = inputs
    for spec in specs:
        x = _apply(spec, x)
    return keras.Model(inputs, x, name="recipe_model")
