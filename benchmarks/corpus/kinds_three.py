"""The corpus's third part: files of the kinds that broke on the third hold-out (issue 32), each made by the tool
that makes such files in the wild. Called by build.py (`--part-three` adds only these).

- already quantized: per-channel int8 QDQ (onnxruntime's quantize_static), int4 MatMulNBits and int4 blocked
  DequantizeLinear (onnxruntime's MatMulNBitsQuantizer, both formats), fp8 e4m3fn QDQ at opset 21;
- bf16 weights and math (a torch bf16 module through the TorchScript exporter);
- string inputs: a scikit-learn ColumnTransformer over two string columns (skl2onnx);
- a LightGBM classifier through onnxmltools; a torch.cond branch through the dynamo exporter;
- diffusers' UNet2DConditionModel and AutoencoderKL's decoder from tiny configs (self-attention over every latent
  pixel: memory);
- Whisper's encoder, T5's encoder, CLIP's vision tower, DETR, wav2vec2 from transformers configs;
- opset 11, 22 and 23 files (onnx's version converter);
- Polygraphy's test shapes rebuilt with onnx-graphsurgeon as Polygraphy builds them: weights in a file beside the
  model under another name, an input dim written -1 feeding Shape -> ReduceProd -> Reshape, an empty tensor
  (static 0-size dims) expanded to a shape input.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def _entry(out: Path, name: str, source: str, make) -> dict:
    try:
        with _quiet():
            make(out / name)
        return {"file": name, "source": source}
    except Exception as exc:  # a tool failing on its own input is a result of the build, not a crash
        return {"file": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}


def quantized(out: Path) -> list[dict]:
    import logging

    import numpy as np
    import onnx
    from kinds import calibration, random_feeds
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)

    def per_channel(path: Path) -> None:
        source = out / "zoo_light_resnet50.onnx"
        quantize_static(str(source), str(path), calibration(random_feeds(source)), quant_format=QuantFormat.QDQ,
                        per_channel=True)

    def fp8(path: Path) -> None:  # the MatMuls of a transformer, as fp8 deployments quantize them
        source = out / "hf_bert_ts_dynamic.onnx"
        model = onnx.version_converter.convert_version(onnx.load(str(source)), 21)
        staged = path.with_name("_fp8_source.onnx")
        onnx.save(model, str(staged))

        rng = np.random.default_rng(0)
        tokens = [{"input_ids": rng.integers(0, 100, (1, 16)), "attention_mask": np.ones((1, 16), np.int64)}
                  for _ in range(4)]
        quantize_static(str(staged), str(path), calibration(tokens), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QFLOAT8E4M3FN, weight_type=QuantType.QFLOAT8E4M3FN,
                        op_types_to_quantize=["MatMul"], calibrate_method=CalibrationMethod.Distribution)
        staged.unlink()

    def nbits(quant_format: str):
        def make(path: Path) -> None:
            quantizer = MatMulNBitsQuantizer(onnx.load(str(out / "kv_gpt2_decoder_with_past.onnx")), block_size=32,
                                             is_symmetric=True, quant_format=getattr(QuantFormat, quant_format))
            quantizer.process()
            quantizer.model.save_model_to_file(str(path), use_external_data_format=False)
        return make

    return [_entry(out, "int8_qdq_per_channel_resnet50.onnx", "quantize_static per-channel QDQ of zoo resnet50",
                   per_channel),
            _entry(out, "fp8_qdq_bert.onnx", "quantize_static fp8 e4m3fn QDQ (opset 21) of the BERT MatMuls",
                   fp8),
            _entry(out, "int4_matmulnbits_kv_gpt2.onnx", "MatMulNBitsQuantizer (MatMulNBits) of the GPT-2 KV decoder",
                   nbits("QOperator")),
            _entry(out, "int4_qdq_kv_gpt2.onnx", "MatMulNBitsQuantizer (int4 blocked DequantizeLinear) of the GPT-2 "
                   "KV decoder", nbits("QDQ"))]


def bf16(out: Path) -> list[dict]:
    def make(path: Path) -> None:
        import torch

        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8)).to(torch.bfloat16)
        torch.onnx.export(model.eval(), (torch.randn(2, 32, dtype=torch.bfloat16),), str(path), input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}}, opset_version=17, dynamo=False)

    return [_entry(out, "bf16_mlp_torch.onnx", "torch bf16 module, TorchScript exporter", make)]


def string_columns(out: Path) -> list[dict]:
    def make(path: Path) -> None:
        import numpy as np
        import pandas as pd
        from skl2onnx import to_onnx
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        rng = np.random.default_rng(0)
        frame = pd.DataFrame({"city": rng.choice(["paris", "lima", "oslo"], 120),
                              "plan": rng.choice(["free", "pro"], 120),
                              "age": rng.uniform(18, 80, 120).astype(np.float32)})
        y = (frame["age"] > 40).astype(np.int64)
        pipe = Pipeline([("columns", ColumnTransformer([("onehot", OneHotEncoder(), ["city", "plan"]),
                                                        ("scale", StandardScaler(), ["age"])])),
                         ("model", LogisticRegression())]).fit(frame, y)
        path.write_bytes(to_onnx(pipe, frame[:1], target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString())

    return [_entry(out, "ml_strings_column_transformer.onnx", "scikit-learn ColumnTransformer with two string "
                   "columns + skl2onnx", make)]


def diffusers_models(out: Path) -> list[dict]:
    def unet(path: Path) -> None:
        import torch
        from diffusers import UNet2DConditionModel

        torch.manual_seed(0)
        model = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
                                     block_out_channels=(32, 64), cross_attention_dim=32, attention_head_dim=8,
                                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8).eval()

        class Call(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.unet = model

            def forward(self, sample, timestep, encoder_hidden_states):
                return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

        args = (torch.randn(2, 4, 32, 32), torch.tensor([10.0, 10.0]), torch.randn(2, 7, 32))
        torch.onnx.export(Call(), args, str(path), input_names=["sample", "timestep", "encoder_hidden_states"],
                          output_names=["out_sample"], opset_version=17, dynamo=False,
                          dynamic_axes={"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
                                        "encoder_hidden_states": {0: "batch", 1: "sequence"}})

    def vae_decoder(path: Path) -> None:
        import torch
        from diffusers import AutoencoderKL

        torch.manual_seed(0)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            layers_per_block=1, norm_num_groups=8).eval()

        class Decode(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.vae = vae

            def forward(self, latent):
                return self.vae.decode(latent, return_dict=False)[0]

        torch.onnx.export(Decode(), (torch.randn(1, 4, 16, 16),), str(path), input_names=["latent_sample"],
                          output_names=["sample"], opset_version=17, dynamo=False,
                          dynamic_axes={"latent_sample": {0: "batch", 2: "height", 3: "width"}})

    return [_entry(out, "diffusers_unet_tiny.onnx", "diffusers UNet2DConditionModel from a tiny config", unet),
            _entry(out, "diffusers_vae_decoder_tiny.onnx", "diffusers AutoencoderKL decoder from a tiny config",
                   vae_decoder)]


def transformers_kinds(out: Path) -> list[dict]:
    import torch
    import transformers as t

    class First(torch.nn.Module):  # one named field of a ModelOutput
        def __init__(self, model, key: str):
            super().__init__()
            self.model, self.key = model, key

        def forward(self, *args):
            return getattr(self.model(*args, return_dict=True), self.key)

    def export(build, key, args, names, axes):
        def make(path: Path) -> None:
            torch.manual_seed(0)
            torch.onnx.export(First(build().eval(), key).eval(), args, str(path), input_names=names, opset_version=17,
                              dynamo=False, dynamic_axes=axes)
        return make

    def whisper():
        config = t.WhisperConfig(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                 decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16,
                                 max_source_positions=50, vocab_size=100, pad_token_id=0, bos_token_id=1,
                                 eos_token_id=2, decoder_start_token_id=1)
        return t.WhisperModel(config).get_encoder()

    def detr():
        backbone = t.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], out_features=["stage2"])
        return t.DetrForObjectDetection(t.DetrConfig(
            use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=32,
            encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
            decoder_ffn_dim=64, num_queries=10, num_labels=5))

    return [
        _entry(out, "hf_whisper_encoder.onnx", "transformers Whisper encoder from a config",
               export(whisper, "last_hidden_state", (torch.randn(1, 16, 100),), ["input_features"],
                      {"input_features": {0: "batch"}})),
        _entry(out, "hf_t5_encoder.onnx", "transformers T5 encoder from a config",
               export(lambda: t.T5EncoderModel(t.T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                                          vocab_size=100)),
                      "last_hidden_state", (torch.randint(0, 100, (2, 12)),), ["input_ids"],
                      {"input_ids": {0: "batch", 1: "sequence"}})),
        _entry(out, "hf_clip_vision.onnx", "transformers CLIP vision tower from a config",
               export(lambda: t.CLIPVisionModel(t.CLIPVisionConfig(hidden_size=64, intermediate_size=128,
                                                                   num_hidden_layers=2, num_attention_heads=4,
                                                                   image_size=32, patch_size=8)),
                      "pooler_output", (torch.randn(2, 3, 32, 32),), ["pixel_values"], {"pixel_values": {0: "batch"}})),
        _entry(out, "hf_wav2vec2.onnx", "transformers wav2vec2 from a config",
               export(lambda: t.Wav2Vec2Model(t.Wav2Vec2Config(
                   hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32, 32),
                   conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)),
                      "last_hidden_state", (torch.randn(2, 1600),), ["input_values"],
                      {"input_values": {0: "batch", 1: "samples"}})),
        _entry(out, "hf_detr.onnx", "transformers DETR (ResNet backbone) from a config",
               export(detr, "logits", (torch.randn(1, 3, 64, 64),), ["pixel_values"], {"pixel_values": {0: "batch"}})),
    ]


def gradient_boosting(out: Path) -> list[dict]:
    def make(path: Path) -> None:
        import lightgbm
        import numpy as np
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        rng = np.random.default_rng(0)
        x = rng.standard_normal((300, 8)).astype(np.float32)
        model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1).fit(x, (x[:, 0] > 0).astype(int))
        onnx_model = convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, 8]))], target_opset=15,
                                      zipmap=False)
        path.write_bytes(onnx_model.SerializeToString())

    return [_entry(out, "ml_lightgbm_classifier.onnx", "LightGBM + onnxmltools (ai.onnx.ml trees)", make)]


def torch_cond(out: Path) -> list[dict]:
    def make(path: Path) -> None:
        import torch

        class Branch(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)

            def forward(self, x):
                return torch.cond(x.sum() > 0, lambda t: self.a(t).relu(), lambda t: self.b(t) * 2.0, (x,))

        torch.manual_seed(0)
        torch.onnx.export(Branch().eval(), (torch.randn(2, 8),), str(path), input_names=["x"], dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), opset_version=18)

    return [_entry(out, "cf_torch_cond.onnx", "torch.cond through the dynamo exporter (If)", make)]


def new_opsets(out: Path) -> list[dict]:
    import onnx

    def converted(source: str, opset: int):
        def make(path: Path) -> None:
            onnx.save(onnx.version_converter.convert_version(onnx.load(str(out / source)), opset), str(path))
        return make

    return [_entry(out, f"opset{v}_{Path(s).stem}.onnx", f"onnx version converter to opset {v} of {s}", converted(s, v))
            for s, v in (("keras_MobileNetV2.onnx", 22), ("hf_bert_ts_dynamic.onnx", 23), ("zoo_light_resnet50.onnx", 11))]


def polygraphy_shapes(out: Path) -> list[dict]:
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

    def external(path: Path) -> None:
        a, b, d = (gs.Constant(n, np.full((1, 3), i + 1, np.float32)) for i, n in enumerate("abd"))
        x, y = gs.Variable("input", np.float32, (1, 3)), gs.Variable("output", np.float32, (1, 3))
        c, e = gs.Variable("c"), gs.Variable("e")
        graph = gs.Graph(nodes=[gs.Node("Add", inputs=[a, b], outputs=[c]), gs.Node("Add", inputs=[c, d], outputs=[e]),
                                gs.Node("Add", inputs=[x, e], outputs=[y])], inputs=[x], outputs=[y], opset=17)
        onnx.save(gs.export_onnx(graph), str(path), save_as_external_data=True, location="gs_ext_weights.data",
                  size_threshold=0)

    def reshape(path: Path) -> None:
        data = gs.Variable("data", np.float32, (-1, 3, 5, 5))
        shape, product, output = gs.Variable("shape", np.int64), gs.Variable("product", np.int64), gs.Variable("output", np.float32)
        graph = gs.Graph(nodes=[gs.Node("Shape", inputs=[data], outputs=[shape]),
                                gs.Node("ReduceProd", inputs=[shape], outputs=[product], attrs={"axes": [0], "keepdims": 1}),
                                gs.Node("Reshape", inputs=[data, product], outputs=[output])],
                         inputs=[data], outputs=[output], opset=13)
        onnx.save(gs.export_onnx(graph), str(path))

    def empty_expand(path: Path) -> None:
        data, new_shape = gs.Variable("data", np.float32, (2, 0, 3, 0)), gs.Variable("new_shape", np.int64, (5,))
        out_ = gs.Variable("expanded", np.float32)
        graph = gs.Graph(nodes=[gs.Node("Expand", inputs=[data, new_shape], outputs=[out_])], inputs=[data, new_shape],
                         outputs=[out_], opset=13)
        onnx.save(gs.export_onnx(graph), str(path))

    return [_entry(out, "gs_ext_weights_same_dir.onnx", "onnx-graphsurgeon, weights in ext_weights.data beside it",
                   external),
            _entry(out, "gs_reshape_negative_dim.onnx", "onnx-graphsurgeon, Polygraphy's reshape.onnx (dim -1)", reshape),
            _entry(out, "gs_empty_tensor_expand.onnx", "onnx-graphsurgeon, Polygraphy's empty_tensor_expand.onnx",
                   empty_expand)]


def part_three(out: Path) -> list[dict]:
    return (quantized(out) + bf16(out) + string_columns(out) + gradient_boosting(out) + torch_cond(out)
            + diffusers_models(out) + transformers_kinds(out) + new_opsets(out) + polygraphy_shapes(out))
