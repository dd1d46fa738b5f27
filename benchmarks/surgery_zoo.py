"""Our default pass list vs onnxsim and onnxslim on a zoo of exports nobody in this project wrote.

For each model: node count, onnxruntime latency (batch 1, median) and max abs output difference
against the raw export, for the raw export, onnxsim, onnxslim and ours. Needs the `peers` and
`tensorflow` extras.
    python benchmarks/surgery_zoo.py [--only NAME]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import warnings
from contextlib import redirect_stdout
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from _timing import session_run_ms  # noqa: E402

from compiler.stages.surgery import DEFAULT_PASSES, apply_passes  # noqa: E402


def _keras(factory, shape):
    def export(path: Path):
        import keras
        import tensorflow as tf
        import tf2onnx

        model = factory(keras)
        spec = (tf.TensorSpec((None, *shape), tf.float32, name="input"),)

        @tf.function(input_signature=spec)
        def serve(x):
            return model(x, training=False)

        with redirect_stdout(io.StringIO()):
            tf2onnx.convert.from_function(serve, input_signature=spec, opset=17, output_path=str(path))
        return (1, *shape)
    return export


def _torch(factory, shape, dynamo, static=False):
    def export(path: Path):
        import torch

        torch.manual_seed(0)
        model = factory(torch).eval()
        x = torch.randn(2, *shape)
        kwargs = {} if static else {"dynamic_shapes": ({0: torch.export.Dim.DYNAMIC},)} if dynamo else \
            {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}}
        with redirect_stdout(io.StringIO()):
            torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"], opset_version=17,
                              dynamo=dynamo, **kwargs)
        return (2 if static else 1, *shape)
    return export


def _encoder(torch):
    layer = torch.nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, batch_first=True, dropout=0.1)
    return torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


def _gpt2(dynamo: bool):
    """transformers' GPT-2 from a small config, token ids with a dynamic batch and sequence."""
    def export(path: Path):
        import torch
        import transformers

        torch.manual_seed(0)
        config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=128, use_cache=False)
        lm = transformers.GPT2LMHeadModel(config).eval()

        class Logits(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lm = lm

            def forward(self, input):
                return self.lm(input_ids=input, use_cache=False).logits

        ids = torch.randint(0, 1000, (2, 16))
        kwargs = {"dynamic_shapes": ({0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC},)} if dynamo else \
            {"dynamic_axes": {"input": {0: "batch", 1: "seq"}}}
        with redirect_stdout(io.StringIO()):
            torch.onnx.export(Logits(), (ids,), str(path), input_names=["input"], output_names=["output"],
                              opset_version=18 if dynamo else 17, dynamo=dynamo, **kwargs)
        return "tokens", (1, 16)
    return export


class _LSTMHead:  # a torch.nn.LSTM with a linear head: nn.LSTM returns a tuple
    def __new__(cls, torch):
        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = torch.nn.LSTM(16, 32, num_layers=2, batch_first=True)
                self.head = torch.nn.Linear(32, 4)

            def forward(self, x):
                return self.head(self.lstm(x)[0][:, -1])
        return Model()


ZOO = {
    "keras MobileNetV2": _keras(lambda k: k.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35), (96, 96, 3)),
    "keras MobileNetV3Small": _keras(lambda k: k.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3)), (96, 96, 3)),
    "keras MobileNet": _keras(lambda k: k.applications.MobileNet(weights=None, input_shape=(64, 64, 3), alpha=0.5), (64, 64, 3)),
    "keras DenseNet121": _keras(lambda k: k.applications.DenseNet121(weights=None, input_shape=(64, 64, 3)), (64, 64, 3)),
    "keras ResNet50": _keras(lambda k: k.applications.ResNet50(weights=None, input_shape=(64, 64, 3)), (64, 64, 3)),
    "torch TransformerEncoder (torchscript)": _torch(_encoder, (10, 64), dynamo=False),
    "torch TransformerEncoder (dynamo)": _torch(_encoder, (10, 64), dynamo=True),
    "torch TransformerEncoder, static shapes (dynamo)": _torch(_encoder, (10, 64), dynamo=True, static=True),
    "transformers GPT-2 (dynamo)": _gpt2(dynamo=True),
    "torch LSTM (torchscript)": _torch(_LSTMHead, (12, 16), dynamo=False),
    "torch LSTM (dynamo)": _torch(_LSTMHead, (12, 16), dynamo=True),
}


def _latency(model: onnx.ModelProto, feed: dict, iterations: int = 100) -> float:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return statistics.median(session_run_ms(session, feed, iterations))


def _outputs(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def _tools():
    def onnxsim_(model):
        import onnxsim

        with redirect_stdout(io.StringIO()):
            simplified, ok = onnxsim.simplify(model)
        return simplified

    def onnxslim_(model):
        import onnxslim

        with redirect_stdout(io.StringIO()):
            return onnxslim.slim(model)

    def ours(model):
        return apply_passes(model, DEFAULT_PASSES)[0]

    return {"onnxsim": onnxsim_, "onnxslim": onnxslim_, "compiler": ours}


def _diff(value) -> str:
    return value if isinstance(value, str) else f"{value:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only")
    args = parser.parse_args()
    tools = _tools()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, export in ZOO.items():
            if args.only and args.only not in name:
                continue
            path = Path(tmp) / "model.onnx"
            shape = export(path)
            raw = onnx.load(str(path))
            name_in = raw.graph.input[0].name
            if shape[0] == "tokens":  # token ids
                feed = {name_in: np.random.default_rng(0).integers(0, 1000, shape[1])}
            else:
                feed = {name_in: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
            reference = _outputs(raw, feed)
            row = {"model": name, "raw": (len(raw.graph.node), _latency(raw, feed), 0.0)}
            for tool, fn in tools.items():
                try:
                    out = fn(onnx.ModelProto.FromString(raw.SerializeToString()))
                    diff = max(float(np.abs(a - b).max()) for a, b in zip(reference, _outputs(out, feed)))
                    row[tool] = (len(out.graph.node), _latency(out, feed), diff)
                except Exception as exc:  # a peer tool failing on a model is a result, not a crash
                    row[tool] = (None, None, f"failed: {type(exc).__name__}")
            rows.append(row)
            print(name, {k: v for k, v in row.items() if k != "model"}, flush=True)
    print("\n| model | raw nodes | onnxsim | onnxslim | compiler | compiler ≤ min(peers) | raw ms | onnxsim ms | onnxslim ms | compiler ms | compiler max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peers = [r[t][0] for t in ("onnxsim", "onnxslim") if r[t][0] is not None]
        ok = r["compiler"][0] is not None and (not peers or r["compiler"][0] <= min(peers))
        ms = lambda t: f"{r[t][1]:.3f}" if r[t][1] is not None else "-"  # noqa: E731
        n = lambda t: r[t][0] if r[t][0] is not None else r[t][2]  # noqa: E731
        print(f"| {r['model']} | {r['raw'][0]} | {n('onnxsim')} | {n('onnxslim')} | {n('compiler')} | "
              f"{'yes' if ok else 'NO'} | {ms('raw')} | {ms('onnxsim')} | {ms('onnxslim')} | {ms('compiler')} | "
              f"{_diff(r['compiler'][2])} |")


if __name__ == "__main__":
    main()
