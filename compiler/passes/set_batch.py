"""Makes dim 0 of the graph's inputs and outputs static or dynamic."""

from __future__ import annotations

from typing import Literal

from compiler.heavy import onnx
from compiler.passes.args import PassInfo
from compiler.passes.set_dim import NAME, SIZE, set_dims


PASS = PassInfo(
    name="set_batch",
    summary="make dim 0 of inputs/outputs static (size: N) or dynamic (size: dynamic)",
    args={"size": SIZE, "name": NAME},
)


def apply(model: onnx.ModelProto, size: int | Literal["dynamic"] = "dynamic", name: str = "batch") -> onnx.ModelProto:
    return set_dims(model, name, size, 0)
