"""Export stage: the trained framework model to ONNX, named and shaped by the resolved IO spec.

ONNX recipes import their file here instead (frameworks/onnx/importer.py): the first place that loads
the weights, and the gate that says whether onnxruntime can run the file at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from compiler.frameworks import adapter
from compiler.heavy import onnx
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
    exporter: Exporter = Exporter.torchscript
    input_layout: InputLayout = InputLayout.nchw


def run(ctx: StageContext) -> StageResult:
    out = ctx.work_dir / "model.onnx"
    framework = adapter(ctx.cfg.framework.value)
    if framework.reference_is_file:
        fixes = framework.export(ctx.cfg, ctx.io, Path(ctx.cfg.model.path).expanduser(), out, ctx.plan)
        return StageResult("model.onnx", {**checked_model_info(out, strict=False), "source": str(ctx.cfg.model.path),
                                          "import_fixes": fixes})
    framework.export(ctx.cfg, ctx.io, ctx.inputs["train"], out, ctx.plan)
    return StageResult("model.onnx", checked_model_info(out))


def checked_model_info(path: Path, strict: bool = True) -> dict:
    """onnx.checker (by path, so external data and >2 GB work), then shape inference written back in place.

    `strict` (the compiler's own exports) fails on any shape inference error; files from elsewhere
    keep what inference can do, and the info says how far it got.
    """
    checker = "passed"
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as exc:
        if strict:
            raise
        # a file from elsewhere that onnxruntime loads (import checked it) is taken: the checker's word is noted
        checker = f"objects, onnxruntime accepts: {str(exc).splitlines()[0]}"
    inference = "complete"
    try:
        onnx.shape_inference.infer_shapes_path(str(path), str(path), check_type=True, strict_mode=True)
    except Exception:
        if strict:
            raise
        inference = "partial"
        try:
            onnx.shape_inference.infer_shapes_path(str(path), str(path))
        except Exception:
            inference = "failed"
    model = onnx.load(str(path), load_external_data=False)
    return {"nodes": len(model.graph.node), "opset": opset_of(model), "io": io_signature(model),
            "shape_inference": inference, "checker": checker}


def opset_of(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def io_signature(model) -> dict:
    """Names, shapes (symbolic dims as strings) and dtypes of a model's graph inputs and outputs."""
    def describe(values):
        result = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
            result.append({"name": v.name, "shape": dims, "dtype": dtype})
        return result

    initializers = {i.name for i in model.graph.initializer}
    return {"inputs": describe([i for i in model.graph.input if i.name not in initializers]),
            "outputs": describe(model.graph.output)}
