"""Export stage: the trained framework model to ONNX, named and shaped by the recipe's IO spec."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from compiler.stages import StageContext, StageResult


class Exporter(Enum):
    torchscript = "torchscript"   # torch.onnx.export(dynamo=False)
    dynamo = "dynamo"             # torch.onnx.export(dynamo=True); needs onnxscript


class InputLayout(Enum):
    nchw = "nchw"   # channels first, the recipe's IO spec (TensorFlow recipes transpose at the input)
    nhwc = "nhwc"   # TensorFlow recipes only: keep Keras' channels-last input


@dataclass
class ExportConfig:
    opset: int = 17
    dynamic_batch: bool = True
    exporter: Exporter = Exporter.torchscript
    input_layout: InputLayout = InputLayout.nchw


def run(ctx: StageContext) -> StageResult:
    out = ctx.work_dir / "model.onnx"
    if ctx.cfg.framework.value == "onnx":
        import shutil

        shutil.copyfile(Path(ctx.cfg.model.path).expanduser(), out)
        return StageResult("model.onnx", {**checked_model_info(out, rewrite=False), "source": str(ctx.cfg.model.path)})
    if ctx.cfg.framework.value == "torch":
        from compiler.stages.export_torch import export
    else:
        from compiler.stages.export_keras import export
    export(ctx.cfg, ctx.inputs["train"], out)
    return StageResult("model.onnx", checked_model_info(out))


def checked_model_info(path, rewrite: bool = True) -> dict:
    """Run onnx.checker and shape inference; save the inferred shapes in place unless `rewrite` is off."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    if rewrite:
        onnx.save(model, str(path))
    return {"nodes": len(model.graph.node), "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "io": io_signature(model)}


def io_signature(model) -> dict:
    """Names, shapes (symbolic dims as strings) and dtypes of a model's graph inputs and outputs."""
    import onnx

    def describe(values):
        result = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]
            result.append({"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return result

    initializers = {i.name for i in model.graph.initializer}
    return {"inputs": describe([i for i in model.graph.input if i.name not in initializers]),
            "outputs": describe(model.graph.output)}
