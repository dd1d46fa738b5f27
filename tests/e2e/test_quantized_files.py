"""Files that already compute in reduced precision (static int8 QDQ, int4 MatMulNBits) are judged by what they are:
agreement with the file run as written, with the budgets of their precision, and the report says why. An fp32
file keeps the strict gates."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import TINY


def _fp32_model(path, conv: bool) -> None:
    rng = np.random.default_rng(0)
    if conv:
        inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
                 numpy_helper.from_array(rng.standard_normal((8 * 8 * 8, 10)).astype(np.float32) * 0.1, "fc")]
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("Flatten", ["r"], ["f"]), helper.make_node("MatMul", ["f", "fc"], ["logits"])]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    else:
        inits = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32) * 0.1, "w1"),
                 numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32) * 0.1, "w2")]
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("MatMul", ["r", "w2"], ["logits"])]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))


def _static_int8(tmp_path):
    """A static QDQ int8 conv net as onnxruntime's quantize_static writes one (per-channel int8 weights, uint8
    activations), with fixed scales: onnxruntime's engine fuses it into QLinearConv, the reference runs it op by op."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w_scale = np.abs(w).reshape(8, -1).max(1) / 127
    w_q = np.round(w / w_scale[:, None, None, None]).astype(np.int8)
    inits = [numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(w_scale.astype(np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(8, np.int8), "w_zero"),
             numpy_helper.from_array(np.array(0.03, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
             numpy_helper.from_array(np.array(0.05, np.float32), "r_scale"),
             numpy_helper.from_array(np.array(0, np.uint8), "r_zero"),
             numpy_helper.from_array(rng.standard_normal((8 * 8 * 8, 10)).astype(np.float32) * 0.1, "fc")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "r_scale", "r_zero"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "r_scale", "r_zero"], ["rd"]),
             helper.make_node("Flatten", ["rd"], ["f"]), helper.make_node("MatMul", ["f", "fc"], ["logits"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    out = tmp_path / "int8_qdq.onnx"
    onnx.save(model, str(out))
    return out


def _int4(tmp_path):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    fp32, out = tmp_path / "fp32_mlp.onnx", tmp_path / "int4.onnx"
    _fp32_model(fp32, conv=False)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), block_size=32, is_symmetric=True)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), False)
    return out


@pytest.mark.parametrize("make, precision, op", [(_static_int8, "int8", "QuantizeLinear/DequantizeLinear"),
                                                 (_int4, "int4", "MatMulNBits")])
def test_an_already_quantized_file_is_judged_by_agreement(compile_cli, tmp_path, make, precision, op):
    path = make(tmp_path)
    assert any(n.op_type in op for n in onnx.load(str(path)).graph.node)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", *TINY[2:6])
    assert run.code == 0, run.output
    r = run.report
    assert r["quantize"] is None and r["engine"]["plan"]["precision"] == "fp32"  # nothing was converted
    info = r["gates"]
    inherent = next(g for g in info if g["name"] == "reduced-precision outputs (informational)")
    assert f"the file already computes in {precision} ({op}" in inherent["detail"]
    assert "agreement with the file run as written is the gate" in inherent["detail"]
    assert r["agreement"] and all(a["passed"] for a in r["agreement"])
    assert r["agreement"][0]["budget"]["rel_l2"] == 0.2


def test_an_fp32_file_keeps_the_strict_gates(compile_cli, tmp_path):
    path = tmp_path / "fp32.onnx"
    _fp32_model(path, conv=True)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", *TINY[2:6])
    assert run.code == 0, run.output
    assert not run.report["agreement"]
    assert all(not g.get("informational") for g in run.report["gates"])
