"""Folds a zero, constant-mode Pad on the spatial axes into the pads of the Conv/pool after it."""

from __future__ import annotations

from compiler.heavy import gs, np, onnx
from compiler.passes._gs import bypass, constant, on_graph, only_consumer
from compiler.passes.args import PassInfo


PASS = PassInfo(
    name="fuse_pad_into_conv",
    summary="fold a zero constant Pad on spatial axes into the next Conv's pads",
)


_TARGETS = ("Conv", "AveragePool", "MaxPool")


def _fuse(graph: gs.Graph) -> None:
    for pad in [n for n in graph.nodes if n.op == "Pad"]:
        out = pad.outputs[0]
        target = only_consumer(out)
        if target is None or target.op not in _TARGETS or target.inputs[0] is not out or out in graph.outputs:
            continue
        mode = pad.attrs.get("mode", "constant")
        pads = constant(pad.inputs[1]) if len(pad.inputs) > 1 else pad.attrs.get("pads")
        fill = constant(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2].name else np.zeros(1)
        axes = pad.inputs[3] if len(pad.inputs) > 3 and pad.inputs[3].name else None
        if mode not in ("constant", b"constant") or pads is None or fill is None or np.any(fill) or axes is not None:
            continue
        if target.op == "MaxPool" or (target.op == "AveragePool" and not target.attrs.get("count_include_pad", 0)):
            continue  # zeros would change the max / the average's divisor
        pads = np.asarray(pads, dtype=np.int64).reshape(2, -1)  # [begins, ends] over all axes
        if np.any(pads[:, :2]) or np.any(pads < 0) or target.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            continue
        spatial = pads[:, 2:]
        current = np.asarray(target.attrs.get("pads", [0] * spatial.size), dtype=np.int64).reshape(2, -1)
        target.attrs["pads"] = [int(v) for v in (current + spatial).reshape(-1)]
        bypass(graph, pad, pad.inputs[0])
    graph.cleanup()


def apply(model: onnx.ModelProto) -> onnx.ModelProto:
    return on_graph(model, _fuse)
