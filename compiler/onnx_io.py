"""For recipes that start from an ONNX file: read the IO spec from the file into the recipe."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from compiler.errors import Problem


def resolve_onnx_io(cfg: DictConfig) -> list[Problem]:
    """Fill model.input/output and export.dynamic_batch from model.path; problems if it cannot."""
    if OmegaConf.is_missing(cfg.model, "path") or not cfg.model.path:
        return [Problem("model.path", "missing required value", fix="model.path=/abs/path/model.onnx")]
    path = Path(cfg.model.path).expanduser()
    if not path.is_file():
        return [Problem("model.path", "file not found", str(path), fix="give an existing .onnx file")]
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others
        return [Problem("model.path", f"not a readable ONNX model ({type(exc).__name__})", str(path))]
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or not model.graph.output:
        return [Problem("model.path", f"the model has {len(inputs)} inputs; recipes handle one input for now",
                        str(path), fix="extract a one-input subgraph first (polygraphy surgeon extract)")]
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        return [Problem("model.path", "the input is not float32",
                        onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, "float32")]
    dims = list(tensor.shape.dim)
    if not dims or any(not d.HasField("dim_value") for d in dims[1:]):
        return [Problem("model.path", "only the first (batch) input dimension may be dynamic",
                        [d.dim_param or d.dim_value for d in dims],
                        fix="fix the other dims first, e.g. `polygraphy surgeon sanitize --override-input-shapes`")]
    cfg.model.input.name = inputs[0].name
    cfg.model.input.shape = [int(d.dim_value) for d in dims[1:]]
    cfg.model.output.name = model.graph.output[0].name
    cfg.export.dynamic_batch = not dims[0].HasField("dim_value")
    return []
