"""How much of the attention in transformer exports nobody in this project wrote fuses for the CUDA engine: tiny
transformers models built from their configs (no download), exported by torch's TorchScript exporter and by
torch.export, cleaned by the default passes, then fused as an fp16 CUDA engine's conversion fuses them
(compiler.backends.cuda_fusion, each fusion checked against the export on the export's inputs). CPU only.

    python benchmarks/fusion_coverage.py [NAME ...]

A row per model and exporter: fused Attention nodes of the model's attention layers, the model type chosen, the
other fused operators, and any fusion rejected because it changed the outputs.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYERS, HEADS, WIDTH = 2, 4, 32
SEQUENCE, VOCAB = 8, 100


def _model(name: str, config: dict):
    """transformers' `<name>Model` from `<name>Config(**config)`, random weights, in eval mode."""
    import transformers

    return getattr(transformers, f"{name}Model")(getattr(transformers, f"{name}Config")(**config)).eval()


def _text(name: str, mask: bool = True, **config):
    """A text model's last hidden state from (input_ids[, attention_mask]); the mask pads one row."""
    def build():
        import torch

        model = _model(name, config)

        class LastHidden(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask=None):
                if attention_mask is None:
                    return self.model(input_ids=input_ids)[0]
                return self.model(input_ids=input_ids, attention_mask=attention_mask)[0]

        rng = np.random.default_rng(0)
        feeds = {"input_ids": rng.integers(0, VOCAB, (2, SEQUENCE)).astype(np.int64)}
        if mask:
            feeds["attention_mask"] = np.ones((2, SEQUENCE), np.int64)
            feeds["attention_mask"][1, SEQUENCE - 2:] = 0
        return LastHidden(), feeds
    return build


def _vision(name: str, key: str = "pixel_values", shape: tuple = (2, 3, 32, 32), part=None, **config):
    def build():
        import torch

        model = _model(name, config)
        model = part(model) if part else model

        class LastHidden(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, x):
                return self.model(**{key: x}).last_hidden_state

        return LastHidden(), {key: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    return build


BERT_LIKE = dict(vocab_size=VOCAB, num_hidden_layers=LAYERS, num_attention_heads=HEADS, hidden_size=WIDTH,
                 intermediate_size=64, attn_implementation="eager")
VISION = dict(image_size=32, patch_size=8, **{k: v for k, v in BERT_LIKE.items() if k != "vocab_size"})
MODELS = {
    "BERT": _text("Bert", **BERT_LIKE),
    "BERT, no mask": _text("Bert", mask=False, **BERT_LIKE),
    "DistilBERT": _text("DistilBert", vocab_size=VOCAB, n_layers=LAYERS, n_heads=HEADS, dim=WIDTH, hidden_dim=64,
                        attn_implementation="eager"),
    "RoBERTa": _text("Roberta", **BERT_LIKE),
    "ELECTRA": _text("Electra", embedding_size=WIDTH, **BERT_LIKE),
    "ALBERT": _text("Albert", embedding_size=WIDTH, **BERT_LIKE),
    "XLM-R": _text("XLMRoberta", **BERT_LIKE),
    "GPT-2": _text("GPT2", mask=False, vocab_size=VOCAB, n_layer=LAYERS, n_head=HEADS, n_embd=WIDTH,
                   attn_implementation="eager"),
    "CLIP text": _text("CLIPText", **BERT_LIKE),
    "ViT": _vision("ViT", **VISION),
    "DeiT": _vision("DeiT", **VISION),
    "DINOv2": _vision("Dinov2", **VISION),
    "CLIP vision": _vision("CLIPVision", **VISION),
    "Whisper encoder": _vision("Whisper", "input_features", (2, 16, 16), lambda m: m.encoder, d_model=WIDTH,
                               encoder_layers=LAYERS, decoder_layers=1, encoder_attention_heads=HEADS,
                               decoder_attention_heads=HEADS, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                               max_source_positions=8, attn_implementation="eager"),
}


def export(model, feeds: dict, path: Path, dynamo: bool) -> None:
    import torch

    args = tuple(torch.from_numpy(v) for v in feeds.values())
    if dynamo:
        torch.onnx.export(model, args, str(path), input_names=list(feeds), output_names=["y"], dynamo=True,
                          dynamic_shapes=tuple({0: torch.export.Dim("batch")} for _ in feeds), verbose=False)
    else:
        dynamic = {k: {0: "batch", 1: "sequence"} if v.ndim == 2 else {0: "batch"} for k, v in feeds.items()}
        torch.onnx.export(model, args, str(path), input_names=list(feeds), output_names=["y"], opset_version=17,
                          dynamo=False, dynamic_axes=dynamic)


def main() -> None:
    import onnx
    import torch

    from compiler.backends.cuda_fusion import fuse_for_gpu
    from compiler.stages.surgery import DEFAULT_PASSES, apply_passes

    warnings.filterwarnings("ignore")
    names = sys.argv[1:] or list(MODELS)
    print("| model | exporter | Attention fused / layers | model type | other fused | rejected |\n|---|---|---|---|---|---|")
    for name in names:
        for exporter in ("TorchScript", "torch.export"):
            with tempfile.TemporaryDirectory() as folder:
                folder = Path(folder)
                try:
                    torch.manual_seed(0)
                    model, feeds = MODELS[name]()
                    export(model, feeds, folder / "raw.onnx", exporter == "torch.export")
                    clean, _ = apply_passes(onnx.load(str(folder / "raw.onnx")), list(DEFAULT_PASSES))
                    onnx.save(clean, str(folder / "clean.onnx"))
                    info = fuse_for_gpu(folder / "clean.onnx", folder / "fused.onnx", feeds)
                except Exception as exc:  # a row, not a traceback
                    print(f"| {name} | {exporter} | failed: {type(exc).__name__}: {str(exc)[:100]} | | | |", flush=True)
                    continue
            fused = dict(info["fused_operators"])
            attention = fused.pop("Attention", 0)
            other = ", ".join(f"{op} {n}" for op, n in fused.items()) or "-"
            rejected = "; ".join(info.get("fusion_rejected", {})) or "-"
            print(f"| {name} | {exporter} | {attention} / {LAYERS} | {info['model_type']} | {other} | {rejected} |",
                  flush=True)


if __name__ == "__main__":
    main()
