"""Keras -> ONNX through tf2onnx's from_function (its from_keras fails on Keras 3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pathlib import Path

from compiler.errors import StageError
from compiler.heavy import onnx
from compiler.iospec import IOSpec
from compiler.frameworks.keras.fit import load_trained

if TYPE_CHECKING:
    from omegaconf import DictConfig


def export(cfg: DictConfig, io: IOSpec, weights: Path, out: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    model = load_trained(weights)
    # Keras itself is channels-last; an NCHW engine input is transposed at the graph's entrance by tf2onnx
    signature = tuple(tf.TensorSpec(t.keras_shape(), tf.as_dtype(t.dtype), name=t.name) for t in io.inputs)
    nchw = [t.name for t in io.inputs if len(t.shape) == 4 and not t.channels_last]

    @tf.function(input_signature=signature)
    def serve(*xs):
        result = model(list(xs) if len(xs) > 1 else xs[0], training=False)
        return tuple(result) if isinstance(result, (list, tuple)) else (result,)

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=cfg.export.opset,
                                                 inputs_as_nchw=nchw or None)
    except Exception as exc:
        raise StageError("export", f"tf2onnx failed: {exc}", fix="try another export.opset") from exc
    _name_io(proto, io)

    onnx.save(proto, str(out))


def _name_io(proto, io: IOSpec) -> None:
    """tf2onnx suffixes tensor names (`input:0`); give the graph the recipe's IO names and dim names."""
    renames = {v.name: t.name for v, t in zip(proto.graph.input, io.inputs)}
    renames.update({v.name: o.name for v, o in zip(proto.graph.output, io.outputs)})
    for node in proto.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value, t in zip(proto.graph.input, io.inputs):
        value.name = renames[value.name]
        for d, wanted in zip(value.type.tensor_type.shape.dim, t.shape):
            if isinstance(wanted, str):
                d.dim_param = wanted
    for value in proto.graph.output:
        value.name = renames[value.name]
        dims = value.type.tensor_type.shape.dim
        if io.batch_dim and dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = io.batch_dim
