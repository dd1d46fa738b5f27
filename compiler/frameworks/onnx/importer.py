"""Importing an ONNX file from elsewhere: the repairs real files need before any pass can run.

- onnxruntime must load it: if it cannot, its own reason is the one-line error.
- Old IR (< 4) lists every initializer as a graph input too: those are weights, unless the recipe
  lists them as inputs.
- Stale or conflicting value_info is dropped and shapes are inferred again.
- Weights beside the model (external data) are read and written beside the copy.
- What onnx's checker alone objects to, and onnxruntime accepts, is repaired: an unnamed graph gets a name,
  graph outputs typed without a shape (or without a type) get the inferred one, or the rank onnxruntime
  produces with unnamed dims.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.dims import dim_keys
from compiler.errors import StageError
from compiler.heavy import np, onnx
from compiler.iospec import IOSpec
from compiler.onnx_files import has_external_data, save_model
from compiler.passes._gs import inferred_graph
from compiler.weights import load


def onnxruntime_load_error(path: Path, plan: Any) -> str | None:
    """onnxruntime's own reason, on one line, when it cannot load the file; None when it can."""
    import onnxruntime as ort

    from compiler.backends.onnxruntime import session_options

    options = session_options(plan.onnxruntime, "disable", prepack=False)
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        text = " ".join(str(exc).split())
        return text[:400] + ("..." if len(text) > 400 else "")
    return None


def import_file(src: Path, out: Path, io: IOSpec, plan: Any) -> list[str]:
    """Copy `src` to `out` with the repairs it needs; return what was repaired."""
    reason = onnxruntime_load_error(src, plan)
    if reason:
        raise StageError("export", f"onnxruntime cannot load {src.name}: {reason}",
                         fix="re-export the model, or check it with `polygraphy inspect model`")
    model = load(src)  # weights stay on disk, and are streamed once into the copy
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
    if not model.graph.name:
        model.graph.name = src.stem or "main_graph"
        fixes.append(f"the unnamed graph is named '{model.graph.name}'")
    fixes += _negative_dims(model)
    fixes += _typed_outputs(model, src, io)
    save_model(model, out, external=True if has_external_data(src) else None)
    return fixes


def _negative_dims(model: Any) -> list[str]:
    """A negative dim value (Polygraphy's `reshape.onnx` writes -1 for "any") is a dynamic dim, named as the IO spec
    names it (dims.dim_keys). Left as a number, a pass folding `Shape` would compute with -1 and write a
    shape such as -75 that no runtime loads."""
    keys = dim_keys(list(model.graph.input))
    fixes = []
    for value in [*model.graph.input, *model.graph.output]:
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        for axis, d in enumerate(value.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value < 0:
                written = d.dim_value
                d.dim_param = keys.get((value.name, axis), f"{value.name}_dim{axis}")
                fixes.append(f"'{value.name}' dim {axis} was {written}: a dynamic dim ('{d.dim_param}')")
    return fixes


def _typed_outputs(model: Any, src: Path, io: IOSpec) -> list[str]:
    """Give every graph output a type and a shape: the inferred ones, else the element type and rank that
    onnxruntime produces on valid inputs (its dims unnamed). The checker requires both; onnxruntime does not."""
    bare = [o for o in model.graph.output if not o.type.HasField("tensor_type") and not _other_type(o)
            or (o.type.HasField("tensor_type") and (not o.type.tensor_type.HasField("shape")
                                                   or not o.type.tensor_type.elem_type))]
    if not bare:
        return []
    try:
        inferred = {v.name: v for v in inferred_graph(model).output}
    except Exception:
        inferred = {}
    fixes, unknown = [], []
    for output in bare:
        found = inferred.get(output.name)
        tensor = found.type.tensor_type if found is not None and found.type.HasField("tensor_type") else None
        if tensor is not None and tensor.elem_type and tensor.HasField("shape"):
            missing = _missing(output)
            output.type.CopyFrom(found.type)
            fixes.append(f"output '{output.name}' had no {missing}: inferred")
        else:
            unknown.append(output)
    if unknown:
        ran = _run_once(src, io)
        for output in unknown:
            value = ran.get(output.name)
            if value is None:
                continue
            from onnx import helper

            elem, missing = helper.np_dtype_to_tensor_dtype(value.dtype), _missing(output)
            output.type.CopyFrom(onnx.helper.make_tensor_type_proto(elem, [f"{output.name}_dim{i}" for i in
                                                                          range(value.ndim)]))
            fixes.append(f"output '{output.name}' had no {missing} and none can be inferred: rank "
                         f"{value.ndim}, {value.dtype} from one onnxruntime run, dims unnamed")
    return fixes


def _other_type(value: Any) -> bool:
    return any(value.type.HasField(k) for k in ("sequence_type", "map_type", "optional_type", "sparse_tensor_type"))


def _missing(value: Any) -> str:
    t = value.type.tensor_type
    return "type" if not value.type.HasField("tensor_type") or not t.elem_type else "shape"


def _run_once(src: Path, io: IOSpec) -> dict:
    """Outputs by name of one onnxruntime run on valid random inputs at the opt shapes (empty if it fails)."""
    import onnxruntime as ort

    try:
        from compiler.backends.onnxruntime import without_prepacking

        session = ort.InferenceSession(str(src), without_prepacking(), providers=["CPUExecutionProvider"])
        feed = io.random_feed(np.random.default_rng(0), io.shapes(0, "opt"))
        names = [o.name for o in session.get_outputs()]
        return {n: np.asarray(v) for n, v in zip(names, session.run(None, feed)) if isinstance(v, np.ndarray)}
    except Exception:
        return {}
