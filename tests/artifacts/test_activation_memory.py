"""A file whose defaulted dims would exhaust memory (a diffusion UNet's self-attention over every latent pixel)
is scaled down to fit, with a note; dims the recipe gives that cannot fit are exit 2 with the estimate. The
kernel never kills a compile."""

from __future__ import annotations

import onnx
import pytest

from compiler.activation_memory import PEAK_FACTOR, fit_dims, largest_operation
from compiler.memory import GIB


def _attention_file(path):
    """A UNet attention block in miniature, exported as diffusers' is: 8 heads over height*width tokens."""
    import torch

    class SpatialAttention(torch.nn.Module):
        def __init__(self, c: int = 32, heads: int = 8):
            super().__init__()
            self.heads = heads
            self.conv_in = torch.nn.Conv2d(4, c, 3, padding=1)
            self.qkv, self.proj = torch.nn.Linear(c, 3 * c), torch.nn.Linear(c, c)
            self.conv_out = torch.nn.Conv2d(c, 4, 3, padding=1)

        def forward(self, x):
            h = self.conv_in(x)
            b, c, hh, ww = h.shape
            t = h.flatten(2).transpose(1, 2)
            q, k, v = self.qkv(t).reshape(b, -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            a = torch.softmax(q @ k.transpose(-1, -2) * (c // self.heads) ** -0.5, dim=-1) @ v
            t = self.proj(a.transpose(1, 2).reshape(b, -1, c))
            return self.conv_out(t.transpose(1, 2).reshape(b, c, hh, ww) + h)

    torch.manual_seed(0)
    torch.onnx.export(SpatialAttention().eval(), (torch.randn(1, 4, 16, 16),), str(path), input_names=["sample"],
                      output_names=["out"], dynamic_axes={"sample": {0: "batch", 2: "height", 3: "width"}},
                      opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="module")
def attention(tmp_path_factory):
    return _attention_file(tmp_path_factory.mktemp("attn") / "attn.onnx")


DIMS = {"batch": [1, 4, 8], "height": [128, 128, 128], "width": [128, 128, 128]}


def _max_shapes(dims):
    return {"sample": [dims["batch"][2], 4, dims["height"][2], dims["width"][2]]}


def test_the_largest_operation_is_the_attention_scores_at_the_max_shapes(attention):
    largest = largest_operation(onnx.load(str(attention)), _max_shapes(DIMS))
    scores = 8 * 8 * 16384 * 16384 * 4  # batch x heads x tokens x tokens, fp32: the scaling Mul reads and writes it
    assert (largest.op, largest.bytes) == ("Mul", 2 * scores + 4)
    assert largest.peak() == largest.bytes * PEAK_FACTOR


def test_defaulted_dims_are_halved_until_the_peak_fits_larger_side_first(attention):
    fit = fit_dims(onnx.load(str(attention)), _max_shapes, DIMS,
                   {"batch": "batch", "height": "spatial", "width": "spatial"}, budget=GIB)
    assert fit.changed == {"height": [16, 16, 16], "width": [32, 32, 32]} and fit.too_large is None
    assert fit.notes == ["defaulted dims scaled down to fit this machine's memory: height [128, 128, 128] -> "
                         "[16, 16, 16], width [128, 128, 128] -> [32, 32, 32] (at the defaults, Mul '/Mul' alone "
                         "holds 128.0 GiB, an estimated peak of 512.0 GiB against 1.0 GiB allowed; now 0.50 GiB); "
                         "set ++model.dims.height=[min,opt,max] ++model.dims.width=[min,opt,max] to choose"]


def test_given_dims_are_never_changed_and_what_cannot_fit_says_so(attention):
    fit = fit_dims(onnx.load(str(attention)), _max_shapes, DIMS, {"batch": "batch"}, budget=GIB)
    assert fit.changed == {"batch": [1, 1, 1]} and fit.too_large.bytes == 2 * 8 * 16384 * 16384 * 4 + 4
    assert fit_dims(onnx.load(str(attention)), _max_shapes, {**DIMS, "height": [8, 8, 8], "width": [8, 8, 8]},
                    {"batch": "batch"}, budget=GIB).changed == {}  # fits as given


def test_a_default_compile_scales_down_and_passes(compile_cli, attention):
    run = compile_cli("recipe=onnx_file", f"model.path={attention}", "verify.latency.iterations=2",
                      "verify.latency.warmup=1", "verify.latency.batch_sizes=[1]")
    assert run.code == 0, run.output
    assert "defaulted dims scaled down to fit this machine's memory: height [128, 128, 128] -> " in run.stderr
    assert "defaulted dims scaled down" in (run.run_dir / "report.md").read_text()


def test_given_dims_that_cannot_fit_are_refused_before_anything_runs(compile_cli, attention, tmp_path):
    run = compile_cli("recipe=onnx_file", f"model.path={attention}", "++model.dims.batch=[1,8,8]",
                      "++model.dims.height=[128,128,128]", "++model.dims.width=[128,128,128]")
    assert run.code == 2, run.output
    assert "model.dims: at the max of its dims, Mul '/Mul' alone holds 128.0 GiB of activations: an estimated " \
           "peak of 512.0 GiB" in run.stderr
    assert "Fix: lower the max of model.dims.batch, model.dims.height, model.dims.width" in run.stderr
    assert not run.run_dir.exists()
