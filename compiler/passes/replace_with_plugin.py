"""Replaces the subgraph between tensor names by one custom node (e.g. a TensorRT plugin)."""

from __future__ import annotations

from compiler.heavy import gs, onnx
from compiler.passes._gs import on_graph
from compiler.passes.args import Arg, PassInfo


PASS = PassInfo(
    name="replace_with_plugin",
    summary="replace the subgraph between tensor names with one custom op (TensorRT plugin)",
    args={
        "op": Arg("str"),
        "inputs": Arg("names"),
        "outputs": Arg("names"),
        "domain": Arg("str", "", words=("",)),
        "attrs": Arg("mapping", None, optional=True),
        "name": Arg("str", None, optional=True),
    },
)


def apply(model: onnx.ModelProto, op: str, inputs: list, outputs: list, domain: str = "",
          attrs: dict | None = None, name: str | None = None) -> onnx.ModelProto:
    def edit(graph: gs.Graph) -> None:
        tensors = graph.tensors()
        missing = [t for t in [*inputs, *outputs] if t not in tensors]
        if missing:
            raise ValueError(f"no tensor named {missing} in the graph")
        ins, outs = [tensors[t] for t in inputs], [tensors[t] for t in outputs]
        for tensor in outs:
            tensor.inputs.clear()  # detach the old producers; cleanup drops what becomes dead
        graph.layer(op=op, name=name or f"{op}_plugin", inputs=ins, outputs=outs, attrs=dict(attrs or {}),
                    domain=domain or None)
        graph.cleanup().toposort()

    return on_graph(model, edit)
