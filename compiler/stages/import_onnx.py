"""Importing an ONNX file from elsewhere: the repairs real files need before any pass can run.

- onnxruntime must load it: if it cannot, its own reason is the one-line error.
- Old IR (< 4) lists every initializer as a graph input too: those are weights, unless the recipe
  lists them as inputs.
- Stale or conflicting value_info is dropped and shapes are inferred again.
- Weights beside the model (external data) are read and written beside the copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.errors import StageError
from compiler.iospec import IOSpec


def onnxruntime_load_error(path: Path, plan: Any) -> str | None:
    """onnxruntime's own reason, on one line, when it cannot load the file; None when it can."""
    import onnxruntime as ort

    from compiler.backends.onnxruntime import session_options

    options = session_options(plan.onnxruntime, "disable")
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        text = " ".join(str(exc).split())
        return text[:400] + ("..." if len(text) > 400 else "")
    return None


def import_file(src: Path, out: Path, io: IOSpec, plan: Any) -> list[str]:
    """Copy `src` to `out` with the repairs it needs; return what was repaired."""
    import onnx

    from compiler.onnx_files import has_external_data, save_model

    reason = onnxruntime_load_error(src, plan)
    if reason:
        raise StageError("export", f"onnxruntime cannot load {src.name}: {reason}",
                         fix="re-export the model, or check it with `polygraphy inspect model`")
    model = onnx.load(str(src))
    fixes = []
    initializers = {i.name for i in model.graph.initializer}
    weights_as_inputs = [i for i in model.graph.input if i.name in initializers and i.name not in io.input_names]
    if weights_as_inputs:
        keep = [i for i in model.graph.input if i not in weights_as_inputs]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        fixes.append(f"{len(weights_as_inputs)} initializers listed as graph inputs (IR {model.ir_version}) are weights")
    if model.ir_version < 4:
        model.ir_version = 4
        fixes.append("IR version raised to 4 (initializers need not be inputs)")
    if len(model.graph.value_info):
        fixes.append(f"{len(model.graph.value_info)} value_info entries dropped and shapes inferred again")
        del model.graph.value_info[:]
    save_model(model, out, external=True if has_external_data(src) else None)
    return fixes
