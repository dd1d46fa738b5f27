"""Builds the foreign-model corpus: ONNX files this project did not write, from six sources.

    python benchmarks/corpus/build.py OUT_DIR [--torchvision-python /path/to/tv-venv/bin/python]

- onnx's model-zoo graphs (IR 3, opset 9, initializers listed as inputs) and its torch-exported
  backend test graphs, onnxruntime's sample models: all shipped inside the installed packages;
- transformers models built from configs (no download), exported with both torch exporters, static
  and dynamic batch/sequence;
- keras.applications through tf2onnx;
- torchvision (export_torchvision.py, in a venv of its own: see that file);
- fp16 conversions (fp16 inputs and outputs) and models with int32/uint8/bool inputs;
- files onnxruntime cannot load (corrupt, unknown op, custom domain), which must fail cleanly;
- part two (kinds.py): wheel-shipped models (VAD, OCR, detectors), control flow, NMS, KV-cache decoders,
  ai.onnx.ml pipelines, int8 and fp16 files, shape-less IO (`--part-two` adds only these);
- part three (kinds_three.py): already-quantized files (per-channel int8, int4, fp8), bf16, string inputs,
  diffusers UNet/VAE, Whisper/T5/CLIP/DETR/wav2vec2, opsets 22-23, Polygraphy's shapes (`--part-three`).
Writes OUT_DIR/manifest.json: one entry per file with its source.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")
HERE = Path(__file__).resolve().parent


def packaged(out: Path) -> list[dict]:
    """Model-zoo graphs and backend-test graphs from the onnx package, sample models from onnxruntime."""
    import onnx
    import onnxruntime

    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    entries = []
    for f in sorted((data / "light").glob("*.onnx")):
        shutil.copyfile(f, out / f"zoo_{f.stem}.onnx")
        entries.append({"file": f"zoo_{f.stem}.onnx", "source": "onnx model zoo (light)"})
    for folder in ("pytorch-converted", "pytorch-operator"):
        for d in sorted((data / folder).iterdir()):
            if (d / "model.onnx").is_file():
                name = f"onnxtest_{d.name.removeprefix('test_')}.onnx"
                shutil.copyfile(d / "model.onnx", out / name)
                entries.append({"file": name, "source": f"onnx backend tests ({folder})"})
    for f in sorted((Path(onnxruntime.__file__).parent / "datasets").glob("*.onnx")):
        shutil.copyfile(f, out / f"ort_{f.stem}.onnx")
        entries.append({"file": f"ort_{f.stem}.onnx", "source": "onnxruntime datasets"})
    return entries


def _torch_export(model, args, path: Path, names, outputs, dynamo: bool, axes: dict) -> None:
    import torch

    kwargs: dict = {"input_names": names, "output_names": outputs, "opset_version": 17}
    if dynamo:
        if axes:
            per_input = tuple({a: torch.export.Dim.AUTO for a in axes.get(n, {})} for n in names)
            kwargs["dynamic_shapes"] = (per_input,) if type(model).__name__ == "Logits" else per_input  # forward(*xs)
    elif axes:
        kwargs["dynamic_axes"] = axes
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(model.eval(), args, str(path), dynamo=dynamo, **kwargs)


def transformers_models(out: Path) -> list[dict]:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)

    class Logits(torch.nn.Module):  # return_dict models -> a plain tensor output
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            return self.inner(*xs).to_tuple()[0]

    jobs = [
        ("bert", lambda: tf.BertForSequenceClassification(tf.BertConfig(**small)), (ids, mask),
         ["input_ids", "attention_mask"], {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}),
        ("distilbert", lambda: tf.DistilBertModel(tf.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                                     vocab_size=100)), (ids, mask),
         ["input_ids", "attention_mask"], {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}),
        ("gpt2", lambda: tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100,
                                                          use_cache=False)), (ids,),
         ["input_ids"], {"input_ids": {0: "batch", 1: "seq"}}),
        ("roberta", lambda: tf.RobertaModel(tf.RobertaConfig(**small, max_position_embeddings=64)), (ids, mask),
         ["input_ids", "attention_mask"], {}),
        ("vit", lambda: tf.ViTForImageClassification(tf.ViTConfig(hidden_size=32, num_hidden_layers=2,
                                                                  num_attention_heads=2, intermediate_size=64,
                                                                  image_size=32, patch_size=8, num_labels=5)),
         (torch.randn(2, 3, 32, 32),), ["pixel_values"], {"pixel_values": {0: "batch"}}),
    ]
    entries = []
    for name, build, args, names, axes in jobs:
        for dynamo in (False, True):
            label = "dynamo" if dynamo else "ts"
            kind = "dynamic" if axes else "static"
            path = out / f"hf_{name}_{label}_{kind}.onnx"
            try:
                _torch_export(Logits(build()), args, path, names, ["output"], dynamo, axes)
                entries.append({"file": path.name, "source": "transformers", "exporter": label, "dynamic": kind})
            except Exception as exc:
                entries.append({"file": path.name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"})
    return entries


def keras_models(out: Path) -> list[dict]:
    import keras
    import tensorflow as tf
    import tf2onnx

    jobs = {
        "MobileNetV2": lambda: keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35),
        "MobileNetV3Small": lambda: keras.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3)),
        "EfficientNetB0": lambda: keras.applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3)),
        "DenseNet121": lambda: keras.applications.DenseNet121(weights=None, input_shape=(64, 64, 3)),
    }
    entries = []
    for name, build in jobs.items():
        model = build()
        spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input"),)

        @tf.function(input_signature=spec)
        def serve(x, model=model):
            return model(x, training=False)

        path = out / f"keras_{name}.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            tf2onnx.convert.from_function(serve, input_signature=spec, opset=17, output_path=str(path))
        entries.append({"file": path.name, "source": "keras.applications + tf2onnx", "dynamic": "batch"})
    return entries


def fp16_models(out: Path, names: list[str]) -> list[dict]:
    """fp16 weights, activations, inputs and outputs (onnxruntime's converter with keep_io_types off)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    entries = []
    for name in names:
        if not (out / name).is_file():
            continue
        model = convert_float_to_float16(onnx.load(str(out / name)), keep_io_types=False)
        target = f"fp16_{name}"
        onnx.save(model, str(out / target))
        entries.append({"file": target, "source": f"fp16 conversion of {name}"})
    return entries


def integer_input_models(out: Path) -> list[dict]:
    import torch

    class Lookup(torch.nn.Module):  # int32 ids, a bool mask
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Embedding(50, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, ids, keep):
            vectors = self.table(ids.long()) * keep.unsqueeze(-1).float()
            return self.head(vectors.sum(1))

    class Pixels(torch.nn.Module):  # uint8 images, normalised inside
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, image):
            return self.conv(image.float() / 255.0).mean((2, 3))

    torch.manual_seed(0)
    _torch_export(Lookup(), (torch.randint(0, 50, (2, 6), dtype=torch.int32), torch.ones(2, 6, dtype=torch.bool)),
                  out / "int_lookup_int32_bool_ts.onnx", ["ids", "keep"], ["scores"], False,
                  {"ids": {0: "batch", 1: "length"}, "keep": {0: "batch", 1: "length"}})
    _torch_export(Pixels(), (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8),), out / "int_pixels_uint8_dynamo.onnx",
                  ["image"], ["features"], True, {"image": {0: "batch"}})
    return [{"file": "int_lookup_int32_bool_ts.onnx", "source": "torch export (int32 + bool inputs)"},
            {"file": "int_pixels_uint8_dynamo.onnx", "source": "torch export (uint8 input, external data)"}]


def unloadable(out: Path) -> list[dict]:
    """Files onnxruntime cannot load: each must exit 1 or 2 with a one-line reason."""
    import onnx
    from onnx import TensorProto, helper

    (out / "bad_not_protobuf.onnx").write_bytes(b"\x08\x07this is not an onnx model")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    for name, node, imports in (
            ("bad_unknown_op", helper.make_node("NoSuchOp", ["x"], ["y"]), [helper.make_opsetid("", 17)]),
            ("bad_custom_domain", helper.make_node("FancyActivation", ["x"], ["y"], domain="com.example"),
             [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])):
        model = helper.make_model(helper.make_graph([node], name, [x], [y]), opset_imports=imports)
        onnx.save(model, str(out / f"{name}.onnx"))
    good = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)])
    (out / "bad_truncated.onnx").write_bytes(good.SerializeToString()[:-9])
    return [{"file": f"{n}.onnx", "source": "broken on purpose"} for n in
            ("bad_not_protobuf", "bad_unknown_op", "bad_custom_domain", "bad_truncated")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--torchvision-python", help="python of a venv with torch 2.14.1 + torchvision 0.29.1")
    parser.add_argument("--part-two", action="store_true",
                        help="only the second part's kinds (kinds.py), added to an OUT_DIR built before")
    parser.add_argument("--part-three", action="store_true",
                        help="only the third part's kinds (kinds_three.py), added to an OUT_DIR built before")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part_two or args.part_three:
        from kinds import part_two
        from kinds_three import part_three

        part, build = (2, part_two) if args.part_two else (3, part_three)
        manifest = args.out / "manifest.json"
        kept = [e for e in json.loads(manifest.read_text()) if e.get("part") != part] if manifest.is_file() else []
        entries = [{**e, "part": part} for e in build(args.out)]
        manifest.write_text(json.dumps(kept + entries, indent=2))
        _summary(entries)
        return
    entries = packaged(args.out) + transformers_models(args.out) + keras_models(args.out) + integer_input_models(args.out)
    if args.torchvision_python:
        subprocess.run([args.torchvision_python, str(HERE / "export_torchvision.py"), str(args.out)], check=True)
        entries += json.loads((args.out / "torchvision.json").read_text())
    entries += fp16_models(args.out, ["hf_bert_ts_dynamic.onnx", "keras_MobileNetV2.onnx", "tv_resnet18_ts_static.onnx"])
    entries += unloadable(args.out)
    from kinds import part_two

    entries += [{**e, "part": 2} for e in part_two(args.out)]
    from kinds_three import part_three

    entries += [{**e, "part": 3} for e in part_three(args.out)]
    (args.out / "manifest.json").write_text(json.dumps(entries, indent=2))
    _summary(entries)


def _summary(entries: list[dict]) -> None:
    built = [e for e in entries if "error" not in e]
    print(f"{len(built)} files from {len({e['source'].split(' (')[0] for e in built})} sources; "
          f"{len(entries) - len(built)} exports failed:")
    for e in entries:
        if "error" in e:
            print(f"  {e['file']}: {e['error']}")


if __name__ == "__main__":
    sys.exit(main())
