"""onnxruntime's transformer fusions on real exports, as a CUDA engine's fp16 conversion runs them first: the packed
q/k/v of timm and nn.MultiheadAttention split, the scale moved after q·kᵀ, zero biases restored, the model type,
heads and hidden size read from the graph. Fused op counts are asserted, and the fused model (whose ops all have
CPU kernels) gives the original's outputs on the CPU provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from compiler.backends.cuda_fusion import fuse_for_gpu, transformer_params
from compiler.stages.surgery import DEFAULT_PASSES, apply_passes


class TimmAttention(nn.Module):
    """timm's ViT attention as timm writes it: one packed qkv projection, unbind, q scaled before q·kᵀ."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TimmBlock(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), TimmAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """timm's VisionTransformer in small: patch embedding, cls token concatenated, position embedding added, then
    the blocks. The first block's residual skip then comes from an Add, not from a previous block."""

    def __init__(self, dim: int = 32, patch: int = 8, image: int = 32):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks, self.norm, self.head = nn.Sequential(TimmBlock(dim), TimmBlock(dim)), nn.LayerNorm(dim), \
            nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class MultiheadBlock(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.norm, self.attn = nn.LayerNorm(dim), nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x):
        y = self.norm(x)
        return x + self.attn(y, y, y, need_weights=False)[0]


class MultiheadEncoder(nn.Module):
    """Two nn.MultiheadAttention blocks and a final norm: the layer norm after each residual is where
    onnxruntime's fusion starts looking."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.blocks, self.norm = nn.Sequential(MultiheadBlock(dim), MultiheadBlock(dim)), nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.blocks(x))


class LastHidden(nn.Module):
    def __init__(self, model: nn.Module, *names: str):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs))).last_hidden_state


def _randomise_biases(module: nn.Module) -> nn.Module:
    """Trained weights: a fresh transformers model's biases are zeros, which no real model has."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return module.eval()


def _bert():
    import transformers

    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                     vocab_size=100, attn_implementation="eager")
    return LastHidden(_randomise_biases(transformers.BertModel(config)), "input_ids", "attention_mask")


def _hf_vit():
    """transformers' ViT with eager attention: scores scaled by a multiply, and no mask."""
    import transformers

    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                    image_size=32, patch_size=8, attn_implementation="eager")
    return LastHidden(_randomise_biases(transformers.ViTModel(config)), "pixel_values")


def _clip_vision():
    import transformers

    config = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, image_size=32, patch_size=8)
    return LastHidden(_randomise_biases(transformers.CLIPVisionModel(config)), "pixel_values")


def _feeds(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if name == "bert":
        mask = np.ones((2, 8), np.int64)
        mask[1, 6:] = 0  # padding: the mask path is exercised
        return {"input_ids": rng.integers(0, 100, (2, 8)).astype(np.int64), "attention_mask": mask}
    if name in ("clip_vision", "timm_vit_embedded", "hf_vit"):
        return {"pixel_values": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}
    return {"x": rng.standard_normal((2, 10, 32)).astype(np.float32)}


MODELS = {  # name: (build, fused operator counts, packed projections split)
    "timm_vit": (lambda: _randomise_biases(nn.Sequential(TimmBlock(), TimmBlock())),
                 {"Attention": 2, "BiasGelu": 2, "LayerNormalization": 1, "SkipLayerNormalization": 3}, 2),
    "timm_vit_embedded": (lambda: _randomise_biases(TinyViT()),
                          {"Attention": 2, "BiasGelu": 2, "LayerNormalization": 1, "SkipLayerNormalization": 4}, 2),
    "bert": (_bert, {"Attention": 2, "BiasGelu": 2, "EmbedLayerNormalization": 1, "SkipLayerNormalization": 4}, 2),
    "clip_vision": (_clip_vision, {"Attention": 2, "LayerNormalization": 2, "SkipLayerNormalization": 3}, 2),
    "hf_vit": (_hf_vit, {"Attention": 2, "BiasGelu": 2, "LayerNormalization": 1, "SkipLayerNormalization": 4}, 2),
    # nn.MultiheadAttention: its packed in_proj is split and its sequence-first attention made batch-first
    "multihead": (lambda: _randomise_biases(MultiheadEncoder()),
                  {"Attention": 2, "LayerNormalization": 1, "SkipLayerNormalization": 2}, 2),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def fused(request, tmp_path_factory):
    name = request.param
    build, _, _ = MODELS[name]
    folder = tmp_path_factory.mktemp(name)
    feeds = _feeds(name)
    model = build()
    raw = folder / "model.onnx"
    dynamic = {k: {0: "batch", 1: "sequence"} if name == "bert" else {0: "batch"} for k in feeds}  # as BERT ships
    torch.onnx.export(model, tuple(torch.from_numpy(v) for v in feeds.values()), str(raw), input_names=list(feeds),
                      output_names=["y"], opset_version=17, dynamo=False, dynamic_axes=dynamic)
    clean, _ = apply_passes(onnx.load(str(raw)), list(DEFAULT_PASSES))  # fuse_parallel_matmuls too: it is undone
    onnx.save(clean, str(folder / "model.clean.onnx"))
    info = fuse_for_gpu(folder / "model.clean.onnx", folder / "model.fused.onnx", feeds)  # checked, as quantize does
    return name, raw, folder / "model.fused.onnx", feeds, info


def test_the_fused_operator_counts(fused):
    name, _, _, _, info = fused
    _, expected, packed = MODELS[name]
    assert info["fused_operators"] == expected
    assert info["packed_projections_split"] == packed
    assert (info["num_heads"], info["hidden_size"]) == (4, 32)
    assert info["attention_made_batch_first"] == (2 if name == "multihead" else 0)
    assert "fusion_rejected" not in info  # each fusion computes what the export did, and the check says so
    assert info["fusion_checked_on"] == "2 calibration inputs, CPU provider, against the exported graph"


def test_the_fused_model_computes_the_original_on_the_cpu_provider(fused):
    _, raw, path, feeds, _ = fused
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    before = ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(after, before, atol=1e-4, rtol=1e-3)


def test_heads_and_hidden_size_come_from_the_graph_where_the_reshape_says_minus_one(tmp_path):
    """transformers reshapes q to [0, 0, -1, head size]: onnxruntime cannot read the heads there, we can."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((48, 48), np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, 0, -1, 16], np.int64), "shape")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["q"]),
                               helper.make_node("Reshape", ["q", "shape"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 48])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, shape])
    params = transformer_params(helper.make_model(graph))
    assert params == {"model_type": "bert", "num_heads": 3, "hidden_size": 48}


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_vit_through_torch_export_fuses(tmp_path, attention):
    """transformers' ViT through torch.export (`dynamo=True`, torch's default exporter): a mask that masks nothing,
    Where(all-true, 0, -inf), is added to the scores; with SDPA, kᵀ goes through Reshape -> Transpose -> Reshape and
    an identity Reshape follows the last MatMul. Each is rewritten (exactly) and both attentions fuse."""
    import transformers

    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                    image_size=32, patch_size=8, attn_implementation=attention)
    model = LastHidden(_randomise_biases(transformers.ViTModel(config)), "pixel_values")
    feeds = _feeds("hf_vit")
    raw = tmp_path / "model.onnx"
    torch.onnx.export(model, (torch.from_numpy(feeds["pixel_values"]),), str(raw), input_names=["pixel_values"],
                      output_names=["y"], opset_version=18, dynamo=True,
                      dynamic_shapes={"inputs": ({0: torch.export.Dim("batch")},)})
    clean, _ = apply_passes(onnx.load(str(raw)), list(DEFAULT_PASSES))
    onnx.save(clean, str(tmp_path / "model.clean.onnx"))
    info = fuse_for_gpu(tmp_path / "model.clean.onnx", tmp_path / "model.fused.onnx")
    assert info["empty_masks_dropped"] == 2 and info["attention_scales_moved"] == 2
    assert info["key_transposes_joined"] == (2 if attention == "sdpa" else 0)
    assert info["fused_operators"].get("Attention") == 2
    outputs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
               for p in (raw, tmp_path / "model.fused.onnx")]
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)


@pytest.mark.parametrize("dynamo", [False, True])
def test_a_static_multihead_export_is_still_split_after_the_default_passes(tmp_path, dynamo):
    """With static shapes the default passes merge nn.MultiheadAttention's Unsqueeze(0) into the Reshape that brings
    out the axis of 3 (a target [1, L, B, 3, E]); the packed in_proj is still split, from either exporter, and the
    fused model computes the original."""
    torch.manual_seed(0)
    raw = tmp_path / "model.onnx"
    x = np.random.default_rng(0).standard_normal((2, 10, 32)).astype(np.float32)
    torch.onnx.export(_randomise_biases(MultiheadEncoder()).eval(), (torch.from_numpy(x),), str(raw), input_names=["x"],
                      output_names=["y"], opset_version=18 if dynamo else 17, dynamo=dynamo)
    clean, _ = apply_passes(onnx.load(str(raw)), list(DEFAULT_PASSES))
    onnx.save(clean, str(tmp_path / "model.clean.onnx"))
    info = fuse_for_gpu(tmp_path / "model.clean.onnx", tmp_path / "model.fused.onnx")
    assert info["packed_projections_split"] == 2 and info["attention_made_batch_first"] == 2
    assert info["fused_operators"].get("Attention") == 2
    outputs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
               for p in (raw, tmp_path / "model.fused.onnx")]
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)


class MixedAxesAttention(nn.Module):
    """Sequence-first like nn.MultiheadAttention, but its heads reshape mixes the sequence and batch axes
    (a valid graph that is not attention over the sequence): no batch-first form computes it."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.heads, self.q, self.k, self.v, self.out = heads, *(nn.Linear(dim, dim) for _ in range(4))
        self.norm, self.final = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x):
        b, n, c = x.shape
        y = self.norm(x).transpose(0, 1)
        q, k, v = (p(y).reshape(b * self.heads, n, c // self.heads) for p in (self.q, self.k, self.v))
        context = torch.softmax(q @ k.transpose(1, 2) / 8 ** 0.5, dim=-1) @ v
        return self.final(x + self.out(context.reshape(n, b, c)).transpose(0, 1))


def test_attention_whose_layout_no_batch_first_form_computes_is_left_as_it_is(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 10, 32)).astype(np.float32)
    raw = tmp_path / "model.onnx"
    torch.onnx.export(_randomise_biases(MixedAxesAttention()), (torch.from_numpy(x),), str(raw), input_names=["x"],
                      output_names=["y"], opset_version=17, dynamo=False)
    clean, _ = apply_passes(onnx.load(str(raw)), list(DEFAULT_PASSES))
    onnx.save(clean, str(tmp_path / "model.clean.onnx"))
    info = fuse_for_gpu(tmp_path / "model.clean.onnx", tmp_path / "model.fused.onnx")
    assert info["attention_made_batch_first"] == 0
    outputs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
               for p in (raw, tmp_path / "model.fused.onnx")]
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)


def test_a_fusion_that_raises_leaves_the_graph_unfused_and_says_why(tmp_path, monkeypatch):
    """onnxruntime's optimizer can trip on a graph (an IndexError in its GPT-2 fusion on a raw torch.export GPT-2):
    the engine is then built from the graph unfused, and the report says which model types refused."""
    import onnxruntime.transformers.optimizer as optimizer

    model = _randomise_biases(nn.Sequential(TimmBlock(), TimmBlock()))
    x = np.random.default_rng(0).standard_normal((2, 10, 32)).astype(np.float32)
    raw = tmp_path / "model.onnx"
    torch.onnx.export(model, (torch.from_numpy(x),), str(raw), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamo=False)

    def trips(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(optimizer, "optimize_model", trips)
    info = fuse_for_gpu(raw, tmp_path / "model.fused.onnx")
    assert info["fused_operators"] == {} and info["model_type"] is None
    assert set(info["fusion_refused"]) == {"bert", "gpt2", "clip"}
    assert "IndexError" in info["fusion_refused"]["bert"] or "list index" in info["fusion_refused"]["bert"]
    outputs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
               for p in (raw, tmp_path / "model.fused.onnx")]
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)


def _clip_text():
    import transformers

    config = transformers.CLIPTextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, attn_implementation="eager")
    return LastHidden(_randomise_biases(transformers.CLIPTextModel(config)), "input_ids", "attention_mask")


def test_a_fusion_that_changes_the_outputs_is_rejected_for_one_that_does_not(tmp_path):
    """CLIP's text tower is causal. onnxruntime's bert fusion matches its attention in the TorchScript export and
    drops the causal mask (built there by Range/LessOrEqual/Where); unchecked, the fused graph is off by the
    outputs' own size. Checked on a few inputs, that fusion is rejected and the next model type's kept."""
    model = _clip_text()
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 100, (2, 8)).astype(np.int64), "attention_mask": np.ones((2, 8), np.int64)}
    feeds["attention_mask"][1, 6:] = 0
    raw = tmp_path / "clip_text.onnx"
    torch.onnx.export(model, tuple(torch.from_numpy(v) for v in feeds.values()), str(raw), input_names=list(feeds),
                      output_names=["y"], opset_version=17, dynamo=False,
                      dynamic_axes={k: {0: "batch", 1: "sequence"} for k in feeds})
    clean, _ = apply_passes(onnx.load(str(raw)), list(DEFAULT_PASSES))
    onnx.save(clean, str(tmp_path / "clean.onnx"))
    other = {"input_ids": rng.integers(0, 100, (3, 8)).astype(np.int64), "attention_mask": np.ones((3, 8), np.int64)}

    def outputs(path: Path) -> np.ndarray:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, other)[0]

    unchecked = fuse_for_gpu(tmp_path / "clean.onnx", tmp_path / "unchecked.onnx")
    assert (unchecked["model_type"], unchecked["fused_operators"].get("Attention")) == ("bert", 2)
    assert np.abs(outputs(tmp_path / "unchecked.onnx") - outputs(raw)).max() > 1.0  # the mask is gone

    info = fuse_for_gpu(tmp_path / "clean.onnx", tmp_path / "fused.onnx", feeds)
    assert list(info["fusion_rejected"]) == ["bert"]
    assert info["fusion_rejected"]["bert"].startswith("output y moved by ")
    assert info["model_type"] == "clip" and "Attention" not in info["fused_operators"]
    assert info["fused_operators"]["SkipLayerNormalization"] == 4
    np.testing.assert_allclose(outputs(tmp_path / "fused.onnx"), outputs(raw), atol=1e-5)


@pytest.mark.parametrize("split_to, joined", [([-1, 4, 6, 5], 1), ([-1, 4, 5, 6], 0), ([-1, 2, 6, 10], 0)])
def test_key_transposes_become_one_only_where_they_swap_the_last_two_axes(split_to, joined):
    """Reshape([-1, S, D]) -> Transpose(0, 2, 1) -> Reshape(target) of k [B, H, S, D] is kᵀ only for [.., H, D, S]."""
    import onnx_graphsurgeon as gs
    from onnx import TensorProto, helper, numpy_helper

    from compiler.backends.cuda_fusion import key_transposes_as_one

    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("merge", [-1, 5, 6]), ("split", split_to))]
    nodes = [helper.make_node("Reshape", ["k", "merge"], ["m"]), helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["t", "split"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("k", TensorProto.FLOAT, ["batch", 4, 5, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    g = gs.import_onnx(model)
    assert key_transposes_as_one(g) == joined
    rewritten = gs.export_onnx(g)
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 6)).astype(np.float32)
    got = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"k": x})[0]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"k": x})[0]
    np.testing.assert_array_equal(got, want)
    assert [n.op for n in g.nodes] == (["Transpose"] if joined else ["Reshape", "Transpose", "Reshape"])


def test_report_md_names_the_model_types_the_optimizer_refused(compile_cli):
    from compiler.report import render_markdown
    from tests.conftest import TINY

    run = compile_cli("recipe=mlp_torch", *TINY)
    assert run.code == 0, run.output
    report = run.report
    report["quantize"] = {"precision": "fp16", "judged_by": "agreement", "agreement_score": -0.5, "snippet": "",
                          "fused_for_gpu": {
        "model_type": None, "num_heads": 0, "hidden_size": 0, "fused_operators": {},
        "fusion_refused": {"bert": "IndexError: list index out of range", "gpt2": "KeyError: 'x'"}}}
    text = render_markdown(report, None)
    assert "nothing fused." in text
    assert "The optimizer raised for model type bert (IndexError: list index out of range); gpt2 (KeyError: 'x')." in text
    report["quantize"]["fused_for_gpu"].update(
        fusion_rejected={"bert": "output y moved by 0.874 of its scale (allowed 0.001)"},
        fusion_checked_on="4 calibration inputs, CPU provider, against the exported graph")
    text = render_markdown(report, None)
    assert ("Fusions rejected, as they changed what the graph computes (checked on 4 calibration inputs, CPU provider, "
            "against the exported graph): bert: output y moved by 0.874 of its scale (allowed 0.001).") in text
