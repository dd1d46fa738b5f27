"""Helpers shared by the passes: the onnx <-> onnx-graphsurgeon round trip, bypassing a node,
and reading constants."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from compiler.heavy import gs, np, onnx
from compiler.passes._shape_stand_ins import stand_in
from compiler.weights import on_disk_in, spill, still_on_disk, values_on_disk


def on_graph(model: onnx.ModelProto, edit: Callable[[gs.Graph], None], infer: bool = False,
             symbolic: bool = False) -> onnx.ModelProto:
    """Apply `edit` to the model's graphsurgeon graph and export it, keeping opsets and metadata.

    With `infer`, shapes are inferred first so that `edit` can read tensor shapes and dtypes; with `symbolic`
    too, dims onnx's inference could only name afresh are tied together where onnxruntime's symbolic inference
    proves them (inferred_graph).
    """
    if infer:  # from scratch: exporters leave value_info with their own names for symbolic dims
        kept_info, kept_outputs = list(model.graph.value_info), list(model.graph.output)
        inferred = inferred_graph(model, symbolic)
        del model.graph.value_info[:], model.graph.output[:]
        model.graph.value_info.extend(inferred.value_info)
        model.graph.output.extend(inferred.output)
        try:
            graph = gs.import_onnx(model)
        finally:  # the caller's model is left as it was
            del model.graph.value_info[:], model.graph.output[:]
            model.graph.value_info.extend(kept_info)
            model.graph.output.extend(kept_outputs)
    else:
        graph = gs.import_onnx(model)
    on_disk = on_disk_in(graph)  # weights on disk are read only when a pass asks for their values (weights.py)
    edit(graph)
    still_on_disk(on_disk)
    _pack_sub_byte(graph)
    out = gs.export_onnx(graph, do_type_check=False)
    spill(out)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    _keep_io_types(model, out)
    return out


def _pack_sub_byte(graph: gs.Graph) -> None:
    """int4, uint4 and float4 constants held as arrays (one value a byte, as ml_dtypes has them) go out as ONNX
    stores them, two to a byte: graphsurgeon's exporter writes the array's bytes as they are, which onnx refuses
    ("Raw data size does not match tensor's size"). A constant still as it was read is exported untouched."""
    import ml_dtypes

    sub_byte = {np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4), np.dtype(ml_dtypes.float4_e2m1fn)}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and not isinstance(tensor._values, gs.ir.tensor.LazyValues) \
                and tensor.values.dtype in sub_byte:
            tensor._values = gs.ir.tensor.LazyValues(onnx.numpy_helper.from_array(tensor.values, tensor.name))


SHAPE_ONLY_BYTES = 1 << 16   # larger weights reach shape inference as shape and type only


def inferred_graph(model: onnx.ModelProto, symbolic: bool = False,
                   input_shapes: Mapping[str, Sequence[int]] | None = None) -> onnx.GraphProto:
    """The graph with shapes and types of every tensor inferred afresh (with data propagation): value_info and
    outputs. onnx's inference serialises the model, which stops at 2 GiB, and reads only the shapes of
    weights: it gets a copy without large ones, where onnxruntime's quantizer and optimizer ops have standard
    stand-ins (_shape_stand_ins). `symbolic`: where onnx's inference had to invent dim names
    (`unk__N`), onnxruntime's symbolic inference is asked instead (it costs a sympy import, so only then).
    `input_shapes`: graph inputs of these concrete shapes (ranks as the graph declares them)."""
    light = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(light, field, getattr(model, field))
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    for node in graph.node:
        stand_in(node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    for value in graph.input:
        shape = (input_shapes or {}).get(value.name)
        if shape is not None and value.type.HasField("tensor_type"):
            for d, size in zip(value.type.tensor_type.shape.dim, shape):
                d.dim_value = int(size)
    for tensor in model.graph.initializer:
        if len(tensor.raw_data) > SHAPE_ONLY_BYTES:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        else:
            graph.initializer.append(tensor)
    inferred = onnx.shape_inference.infer_shapes(light, data_prop=True).graph
    if symbolic and any(d.dim_param.startswith("unk__") for v in inferred.value_info
                        for d in v.type.tensor_type.shape.dim):
        twin = onnx.ModelProto()
        twin.CopyFrom(light)
        for node in twin.graph.node:
            stand_in(node, symbolic=True)
        found = _symbolic(twin)
        return inferred if found is None else _merged(inferred, found)
    return inferred


def static_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]],
                  symbolic: bool = False) -> dict[str, tuple[list[int], int]] | None:
    """Every tensor whose dims inference gives in full with the graph inputs at `input_shapes`: name -> (dims,
    element type). None where those shapes do not fit the graph's inputs (another rank or layout) or inference
    cannot read the graph."""
    for value in model.graph.input:
        shape = input_shapes.get(value.name)
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else None
        if shape is not None and dims is not None and (len(dims) != len(shape) or any(
                d.HasField("dim_value") and d.dim_value != s for d, s in zip(dims, shape))):
            return None
    try:
        graph = inferred_graph(model, symbolic=symbolic, input_shapes=input_shapes)
    except Exception:
        return None
    known = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type if value.type.HasField("tensor_type") else None
        if tensor is not None and tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            known[value.name] = ([int(d.dim_value) for d in tensor.shape.dim], tensor.elem_type)
    return known


def _merged(inferred: onnx.GraphProto, symbolic: onnx.GraphProto) -> onnx.GraphProto:
    """The symbolic graph with onnx's element types (its stand-ins have their own) and onnx's static dims where
    sympy left an expression it could not simplify (a Reshape's `floor((1024*w + 1024)/(w + 1))` is 1024).
    Both inferences are sound on intermediate values; a graph output's declared shape may not be, so outputs
    take only the element type."""
    known = {v.name: v.type.tensor_type for v in inferred.value_info if v.type.HasField("tensor_type")}
    outputs = {v.name: v.type.tensor_type for v in inferred.output if v.type.HasField("tensor_type")}
    seen = set()
    for value, dims in [*((v, True) for v in symbolic.value_info), *((v, False) for v in symbolic.output)]:
        seen.add(value.name)
        theirs = (known if dims else outputs).get(value.name)
        if theirs is None or not value.type.HasField("tensor_type"):
            continue
        ours = value.type.tensor_type
        if theirs.elem_type:
            ours.elem_type = theirs.elem_type
        if dims and theirs.HasField("shape") and ours.HasField("shape") and len(theirs.shape.dim) == len(ours.shape.dim):
            for mine, other in zip(ours.shape.dim, theirs.shape.dim):
                if other.HasField("dim_value"):
                    mine.dim_value = other.dim_value
    symbolic.value_info.extend(v for v in inferred.value_info if v.name not in seen)
    return symbolic


def _symbolic_shape_inference():
    """onnxruntime's SymbolicShapeInference, loaded from its file: importing it as `onnxruntime.tools...` runs that
    package's __init__, which imports torch (a TensorFlow recipe must never load torch)."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "compiler._onnxruntime_symbolic_shape_infer"
    if name not in sys.modules:
        origin = importlib.util.find_spec("onnxruntime").origin
        spec = importlib.util.spec_from_file_location(name, Path(origin).parent / "tools" / "symbolic_shape_infer.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].SymbolicShapeInference


def _symbolic(light: onnx.ModelProto) -> onnx.GraphProto | None:
    """onnxruntime's symbolic shape inference: dynamic dims become expressions of the inputs' dims that agree
    across the graph (a Reshape's -1 of `batch * 512 / 1024` is `batch` again), where onnx's inference invents a
    fresh name for each. It never merges two dims it cannot prove equal (no auto_merge), and when it cannot
    finish (an op it does not know, an unprovable broadcast) onnx's inference is used instead."""
    import contextlib
    import io
    import os
    import tempfile

    SymbolicShapeInference = _symbolic_shape_inference()
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="compiler-symbolic-") as scratch:
        os.chdir(scratch)  # it saves temporary models (and their weights) into the working directory
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return SymbolicShapeInference.infer_shapes(light, auto_merge=False, guess_output_rank=False).graph
        except Exception:
            return None
        finally:
            os.chdir(here)


def _keep_io_types(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """graphsurgeon knows tensors only: give graph inputs/outputs of other types (sequences, maps, as from
    ZipMap) or that lost their element type their original type back."""
    original = {v.name: v.type for v in list(before.graph.input) + list(before.graph.output)}
    for value in list(after.graph.input) + list(after.graph.output):
        kept = original.get(value.name)
        if kept is not None and (not kept.HasField("tensor_type") or not value.type.tensor_type.elem_type):
            value.type.CopyFrom(kept)


def constant(tensor) -> np.ndarray | None:
    """The value of a tensor when it is a constant (initializer or Constant node output). A weight on disk is
    read for the caller and not kept in the graph: looking at a weight must not pull every weight into memory."""
    if isinstance(tensor, gs.Constant):
        return tensor._values.load() if values_on_disk(tensor) else tensor.values
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        return value.values if isinstance(value, gs.Constant) else None
    return None


def small_constant(tensor, max_elements: int) -> np.ndarray | None:
    """`constant` for tensors of at most `max_elements` (shape arithmetic, scalars): a weight is never read."""
    if isinstance(tensor, gs.Constant) and int(np.prod(tensor.shape, dtype=np.int64)) > max_elements:
        return None
    return constant(tensor)


def only_consumer(tensor) -> gs.Node | None:
    return tensor.outputs[0] if len(tensor.outputs) == 1 else None


def bypass(graph: gs.Graph, node: gs.Node, src) -> bool:
    """Remove `node`, whose first output equals `src`; its readers read `src` instead.

    When the output is a graph output, `src`'s producer writes the graph output directly.
    Returns False (and changes nothing) when that cannot be done.
    """
    dst = node.outputs[0]
    outputs = {id(t) for t in graph.outputs}
    to_output = id(dst) in outputs
    if to_output and (isinstance(src, gs.Constant) or not src.inputs or id(src) in outputs
                      or src.inputs[0].op == "Constant" or len(src.outputs) > 1):
        return False
    node.inputs.clear()
    node.outputs.clear()
    if to_output:
        producer = src.inputs[0]
        producer.outputs[producer.outputs.index(src)] = dst
        return True
    for consumer in list(dst.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is dst:
                consumer.inputs[i] = src
    return True


def known_shape(tensor) -> list | None:
    shape = getattr(tensor, "shape", None)
    return list(shape) if shape is not None else None


def fresh_name(graph: gs.Graph, base: str) -> str:
    """A tensor name not yet used in the graph (deterministic, so rebuilds hash the same)."""
    taken = graph.tensors().keys()
    name, n = base, 0
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name
