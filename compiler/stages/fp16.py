"""fp16 conversion by onnxruntime's float16 converter (quantize.tool=onnxruntime), keeping chosen nodes fp32.

fp16 fails in one way above all: a tensor beyond its range (|x| > 65504) becomes inf, then NaN.
`overflow_nodes` finds the nodes that produce or read such a tensor on calibration data, so they
stay fp32 before any accuracy is spent; the accuracy-budget search of the quantize stage does the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler import weights
from compiler.heavy import onnx
from compiler.iospec import batch_size, slice_batch
from compiler.onnx_files import has_external_data, save_model
from compiler.weights import SESSION_FOLDER_KEY, read, session_bytes

FP16_MAX = 65504.0
MARGIN = 2.0  # a tensor within 2x of the limit on calibration data may cross it on other inputs


def convert(src: Path, dst: Path, keep_fp32: list[str]) -> None:
    """fp16 weights and activations, fp32 model inputs/outputs, Cast nodes around every kept node. The weights
    are converted one at a time from disk into a spill file beside `dst` (compiler/weights.py)."""
    import shutil

    from onnxruntime.transformers.float16 import convert_float_to_float16


    spill = dst.with_name(f".{dst.name}.spill")
    with weights.spilling_to(spill) as into, weights.fp16_streamed(into):
        model = convert_float_to_float16(weights.load(src), keep_io_types=True,
                                         node_block_list=list(keep_fp32) or None, disable_shape_infer=False)
        save_model(_drop_fp16_round_trips(model), dst, external=True if has_external_data(src) else None)
    shutil.rmtree(spill, ignore_errors=True)


def _drop_fp16_round_trips(model):
    """Remove Cast(fp16) -> Cast(fp32) pairs: the converter puts them between two kept nodes too, where the
    tensor would pass through fp16 (and overflow) although neither side computes in fp16."""
    from onnx import TensorProto

    graph = model.graph
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def cast_to(node) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    renamed, dropped = {}, set()
    for node in graph.node:
        after = consumers.get(node.output[0], []) if node.output else []
        if (cast_to(node) == TensorProto.FLOAT16 and node.output[0] not in outputs and after
                and all(cast_to(c) == TensorProto.FLOAT and c.output[0] not in outputs for c in after)):
            dropped.add(id(node))
            for c in after:
                dropped.add(id(c))
                renamed[c.output[0]] = node.input[0]
    kept = [n for n in graph.node if id(n) not in dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _tensor_peaks(model, samples: dict) -> dict[str, float]:
    """max |x| of every tensor of the fp32 model over the samples (weights included)."""
    import onnxruntime as ort
    from polygraphy import constants
    from polygraphy.backend.onnx import modify_outputs


    peaks = {i.name: float(np.abs(read(i)).max(initial=0.0)) for i in model.graph.initializer  # one at a time
             if i.data_type == onnx.TensorProto.FLOAT}
    marked = onnx.ModelProto()
    marked.CopyFrom(model)  # modify_outputs marks in place; the caller's model keeps its outputs
    marked = modify_outputs(marked, outputs=constants.MARK_ALL)
    serialized, folder = session_bytes(marked)
    from compiler.backends.onnxruntime import without_prepacking

    options = without_prepacking()
    if folder:
        options.add_session_config_entry(SESSION_FOLDER_KEY, folder)
    session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    for start in range(0, batch_size(samples), 64):
        for name, value in zip(names, session.run(names, slice_batch(samples, start, start + 64))):
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                peaks[name] = max(peaks.get(name, 0.0), float(np.abs(value).max(initial=0.0)))
    return peaks


def overflow_nodes(model, samples: dict) -> list[str]:
    """Nodes of the fp32 `model` (a ModelProto) that produce or read a tensor within MARGIN of fp16's range
    on the samples, in graph order."""
    peaks = _tensor_peaks(model, samples)
    limit = FP16_MAX / MARGIN
    return [n.name for n in model.graph.node
            if any(peaks.get(t, 0.0) > limit for t in [*n.input, *n.output] if t)]
