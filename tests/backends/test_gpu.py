"""The GPU path for real: strict-fp32 references and engines on onnxruntime's CUDA provider, tf32 as a gated
precision, reduced precision without labels, and latency with inputs on the device.

Needs onnxruntime-gpu and a CUDA GPU (torch with CUDA for the framework reference); skips with the reason
elsewhere. The mapping behind it is table-tested on every machine in test_gpu_plan.py.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.backends.providers import gpu_onnxruntime
from compiler.plan import has_cuda_gpu
from tests.conftest import TINY


def _why_not() -> str | None:
    if not has_cuda_gpu():
        return "no CUDA GPU (no /dev/nvidia0, no nvidia-smi)"
    if not gpu_onnxruntime():
        return "onnxruntime-gpu is not installed (the CPU onnxruntime is)"
    return None


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_why_not() is not None, reason=f"needs a GPU: {_why_not()}")]
ON_GPU = [*TINY, "verify.max_accuracy_drop=0.5"]


@pytest.mark.parametrize("recipe", ["cnn_torch", "resnet_torch", "bert_torch", "two_head_torch"])
def test_fp32_on_the_cuda_provider_is_strict(compile_cli, recipe):
    run = compile_cli(f"recipe={recipe}", *TINY)
    assert run.code == 0, run.output
    r = run.report
    assert r["engine"]["plan"]["providers"][0] == "CUDAExecutionProvider" and r["engine"]["plan"]["gpu"]
    assert r["engine"]["plan"]["math_mode"] == "strict fp32"
    assert r["metrics"]["max_abs_error"]["engine"] <= 1e-4
    assert all(row["math_mode"]["candidate"] == "strict fp32" for row in r["ledger"])
    conditions = r["latency_conditions"]
    assert conditions["gpu"]["name"] and conditions["inputs"].startswith("on the device")
    b = max(r["metrics"]["latency_ms"]["engine"], key=lambda k: int(k[1:]))
    assert r["metrics"]["latency_ms"]["engine"][b]["throughput_per_s"] > 0
    assert "host_to_device_ms" in r["metrics"]["latency_ms"]["engine"][b]


def test_tf32_is_a_gated_precision_of_its_own(compile_cli):
    run = compile_cli("recipe=resnet_torch", *ON_GPU, "engine.precision=tf32")
    assert run.code == 0, run.output
    r = run.report
    assert r["engine"]["plan"]["math_mode"] == "tf32"
    assert any(g["name"].startswith("accuracy drop") for g in r["gates"])
    assert r["math_modes"]["engine"] == "tf32" and r["math_modes"]["model.clean.onnx"] == "strict fp32"


def _overflowing_model(path) -> None:
    """x -> MatMul(w) -> *1e5 (beyond fp16) -> /1e5 -> Relu: the scaled tensors must stay fp32."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")
    big = numpy_helper.from_array(np.array(1e5, np.float32), "big")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
             helper.make_node("Mul", ["h", "big"], ["scaled"], name="scale_up"),
             helper.make_node("Div", ["scaled", "big"], ["back"], name="scale_down"),
             helper.make_node("Relu", ["back"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [w, big])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


def test_fp16_of_a_foreign_file_without_labels_falls_back_where_it_overflows(compile_cli, tmp_path):
    path = tmp_path / "overflow.onnx"
    _overflowing_model(path)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "engine.precision=fp16", "surgery.passes=[cleanup]",
                      *TINY[2:6])
    assert run.code == 0, run.output
    r = run.report
    assert {"scale_up", "scale_down"} <= set(r["quantize"]["kept_fp32_overflow"])
    assert r["quantize"]["judged_by"] == "agreement"
    assert [a["output"] for a in r["agreement"]] == ["y"] and r["agreement"][0]["passed"]


def test_a_cuda_graph_engine_is_verified_and_timed_through_its_graphs(compile_cli):
    run = compile_cli("recipe=cnn_torch", *TINY, "engine.onnxruntime.cuda_graph=true")
    assert run.code == 0, run.output
    r = run.report
    assert r["engine"]["runtime"]["cuda_graph"] is True
    cuda = dict(r["engine"]["runtime"]["providers"])["CUDAExecutionProvider"]
    assert cuda["enable_cuda_graph"] == "1" and cuda["use_tf32"] == "0"
    assert r["placement"]["memcpy"] == 0 and r["metrics"]["max_abs_error"]["engine"] <= 1e-4


def test_fp16_of_an_attention_model_fuses_and_has_no_host_copies(compile_cli):
    run = compile_cli("recipe=transformer_torch", *ON_GPU, "engine.precision=fp16")
    assert run.code == 0, run.output
    r = run.report
    fused = r["quantize"]["fused_for_gpu"]
    assert fused["fused_operators"] and "fusion_rejected" not in fused
    assert fused["fusion_checked_on"] == "4 calibration inputs, CPU provider, against the exported graph"
    assert r["placement"]["memcpy"] == 0, r["placement"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_vit_file_at_dynamic_batch_runs_without_host_copies(compile_cli, tmp_path, precision):
    """timm's ViT as a foreign file: the class token expanded to the batch computes a shape on the host. The engine
    keeps none of the copies its build session placed, and the session that runs it needs none."""
    import torch

    from tests.backends.test_cuda_fusion import TinyViT, _randomise_biases

    path = tmp_path / "vit.onnx"
    torch.onnx.export(_randomise_biases(TinyViT()), (torch.randn(2, 3, 32, 32),), str(path), input_names=["x"],
                      output_names=["y"], opset_version=17, dynamo=False, dynamic_axes={"x": {0: "batch"}})
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "model.dims.batch=[1,8,16]",
                      f"engine.precision={precision}", *TINY[2:6])
    assert run.code == 0, run.output
    placed = run.report["placement"]
    assert placed["memcpy"] == 0 and placed["copies"] == [], placed


def test_a_saved_cuda_engine_leaves_conv_activation_fusion_to_the_session_that_opens_it(compile_cli):
    """The CUDA provider's FusedConv has no NHWC kernel: an engine saved with it runs those convolutions in NCHW
    under `prefer_nhwc`. The saved engine keeps plain Conv + Relu; the NHWC session places them as NHWC."""
    run = compile_cli("recipe=resnet_torch", *ON_GPU, "engine.precision=fp16")
    assert run.code == 0, run.output
    r = run.report
    ops = [n.op_type for n in onnx.load(str(run.run_dir / r["stages"]["build"]["artifact"])).graph.node]
    assert "FusedConv" not in ops and ops.count("Conv") > 1
    cuda = dict(r["engine"]["runtime"]["providers"])["CUDAExecutionProvider"]
    assert cuda["prefer_nhwc"] == "1" and "ConvActivationFusion" not in r["engine"]["runtime"]["session"]["disabled_optimizers"]
