"""Keras -> ONNX through tf2onnx's from_function (its from_keras fails on Keras 3)."""

from __future__ import annotations

from pathlib import Path

from compiler.errors import StageError
from compiler.model.keras_builder import keras_input_shape
from compiler.stages.train_keras import load_trained


def export(cfg, weights: Path, out: Path) -> None:
    import tensorflow as tf
    import tf2onnx

    model = load_trained(weights)
    spec = cfg.model
    nchw = cfg.export.input_layout.value == "nchw" and len(spec.input.shape) == 3
    batch = None if cfg.export.dynamic_batch else 1
    signature = (tf.TensorSpec((batch, *keras_input_shape(spec.input.shape)), tf.float32, name=spec.input.name),)

    @tf.function(input_signature=signature)
    def serve(x):
        return {spec.output.name: model(x, training=False)}

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=cfg.export.opset,
                                                 inputs_as_nchw=[spec.input.name] if nchw else None)
    except Exception as exc:
        raise StageError("export", f"tf2onnx failed: {exc}", fix="try another export.opset") from exc
    _name_io(proto, spec.input.name, spec.output.name)
    import onnx

    onnx.save(proto, str(out))


def _name_io(proto, input_name: str, output_name: str) -> None:
    """tf2onnx suffixes tensor names (`input:0`); give the graph the recipe's IO names and a `batch` dim."""
    renames = {proto.graph.input[0].name: input_name, proto.graph.output[0].name: output_name}
    for node in proto.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in (proto.graph.input[0], proto.graph.output[0]):
        value.name = renames[value.name]
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
