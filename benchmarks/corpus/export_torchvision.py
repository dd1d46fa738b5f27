"""torchvision exports for the foreign-model corpus, run with a torch that torchvision loads beside.

torchvision from PyPI does not load beside the CPU torch the project installs, so this script runs in
its own venv (`pip install torch==2.14.1 torchvision==0.29.1 onnx onnxscript`):
    /path/to/tv-venv/bin/python benchmarks/corpus/export_torchvision.py OUT_DIR
Models are built with random weights (weights=None): no download. Writes OUT_DIR/torchvision.json.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import warnings
from pathlib import Path

import torch
import torchvision

warnings.filterwarnings("ignore")


def export(name: str, model, shape, out: Path, dynamo: bool, dynamic: str, outputs=("output",)) -> dict:
    """dynamic: "" (static), "batch", or "batch_hw" (batch, height and width)."""
    torch.manual_seed(0)
    model = model.eval()
    x = torch.randn(*shape)
    path = out / f"tv_{name}_{'dynamo' if dynamo else 'ts'}_{dynamic or 'static'}.onnx"
    axes = {0: "batch"} if dynamic == "batch" else ({0: "batch", 2: "height", 3: "width"} if dynamic == "batch_hw" else {})
    kwargs: dict = {"input_names": ["images"], "output_names": list(outputs), "opset_version": 17}
    if dynamo:
        if axes:
            kwargs["dynamic_shapes"] = ({k: torch.export.Dim.AUTO for k in axes},)
    elif axes:
        kwargs["dynamic_axes"] = {"images": axes, **{o: {0: "batch"} for o in outputs if dynamic}}
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            torch.onnx.export(model, (x,), str(path), dynamo=dynamo, **kwargs)
    except Exception as exc:
        return {"file": path.name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    return {"file": path.name, "source": "torchvision", "exporter": "dynamo" if dynamo else "torchscript",
            "dynamic": dynamic or "static"}


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    m = torchvision.models
    jobs = [
        ("resnet18", m.resnet18(), (1, 3, 224, 224), False, ""),
        ("resnet18", m.resnet18(), (2, 3, 224, 224), True, "batch"),
        ("mobilenet_v3_small", m.mobilenet_v3_small(), (2, 3, 224, 224), False, "batch"),
        ("squeezenet1_0", m.squeezenet1_0(), (2, 3, 224, 224), False, "batch"),
        ("shufflenet_v2_x0_5", m.shufflenet_v2_x0_5(), (2, 3, 224, 224), True, "batch"),
        ("efficientnet_b0", m.efficientnet_b0(), (1, 3, 224, 224), True, ""),
        ("mnasnet0_5", m.mnasnet0_5(), (2, 3, 224, 224), False, "batch"),
        ("regnet_x_400mf", m.regnet_x_400mf(), (2, 3, 224, 224), True, "batch"),
    ]
    manifest = [export(name, model, shape, out, dynamo, dyn) for name, model, shape, dynamo, dyn in jobs]
    seg = m.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5)
    manifest.append(export("lraspp_mobilenet_v3", seg, (1, 3, 256, 256), out, False, "batch_hw", ("out",)))
    deeplab = m.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4, aux_loss=True)
    manifest.append(export("deeplabv3_mobilenet_v3", deeplab, (1, 3, 128, 128), out, False, "batch_hw", ("out", "aux")))
    (out / "torchvision.json").write_text(json.dumps(manifest, indent=2))
    for entry in manifest:
        print(entry)


if __name__ == "__main__":
    main()
