"""Makes a dimension of the graph's inputs and outputs static or dynamic (set_batch.py: dim 0)."""

from __future__ import annotations

from typing import Literal

from compiler.heavy import onnx
from compiler.passes.args import Arg, PassInfo


SIZE = Arg("int", "dynamic", minimum=1, words=("dynamic",), help="a static size, or dynamic")
NAME = Arg("str", "batch", help="the dim's name")
PASS = PassInfo(
    name="set_dim",
    summary="make named dims (or dims at `index`) static or dynamic",
    args={
        "name": NAME,
        "size": SIZE,
        "index": Arg("int", None, optional=True, minimum=0, help="the axis, instead of the name"),
    },
)


def set_dims(model: onnx.ModelProto, name: str, size, index: int | None) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {i.name for i in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in initializers:
            continue
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if (index is not None and i == index) or (index is None and dim.dim_param == name):
                if size == "dynamic":
                    dim.dim_param = name
                else:
                    dim.dim_value = int(size)
    del model.graph.value_info[:]  # stale; shapes are inferred again downstream
    return onnx.shape_inference.infer_shapes(model)


def apply(model: onnx.ModelProto, name: str = "batch", size: int | Literal["dynamic"] = "dynamic",
          index: int | None = None) -> onnx.ModelProto:
    """Dims named `name` (or at position `index`) become `size`: an integer, or `dynamic` (named `name`)."""
    return set_dims(model, name, size, index)
