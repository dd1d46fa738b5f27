"""Constants of the newer element types (fp8, int4, uint4, float4) pass through every default pass: compared and
hashed by their raw bytes, written back as ONNX stores them (two 4-bit values a byte)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.stages.surgery import DEFAULT_PASSES, apply_passes


def _dequantized_pair(kind: str):
    """Two identical quantized weights (dedup merges them), each DequantizeLinear'd into a MatMul."""
    rng = np.random.default_rng(0)
    if kind == "fp8":
        values, attrs = rng.standard_normal((4, 4)).astype(ml_dtypes.float8_e4m3fn), {}
        scale = numpy_helper.from_array(np.array(0.5, np.float32), "s")
    else:
        dtype = {"int4": ml_dtypes.int4, "uint4": ml_dtypes.uint4}[kind]
        values = rng.integers(0, 8, (4, 4)).astype(dtype)
        attrs, scale = {"axis": 0, "block_size": 2}, numpy_helper.from_array(np.full((2, 4), 0.5, np.float32), "s")
    weights = [numpy_helper.from_array(values, name) for name in ("w", "w2")]
    nodes = [helper.make_node("DequantizeLinear", [w, "s"], [f"{w}_d"], **attrs) for w in ("w", "w2")]
    nodes += [helper.make_node("MatMul", ["x", "w_d"], ["a"]), helper.make_node("MatMul", ["x", "w2_d"], ["b"]),
              helper.make_node("Add", ["a", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [*weights, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("kind", ["fp8", "int4", "uint4"])
def test_quantized_constants_pass_through_the_default_passes(kind):
    model = _dequantized_pair(kind)
    feed = {"x": np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)}
    before = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    cleaned, records = apply_passes(model, list(DEFAULT_PASSES))
    after = ort.InferenceSession(cleaned.SerializeToString()).run(None, feed)[0]
    np.testing.assert_array_equal(after, before)
    assert len(cleaned.graph.initializer) == 2  # the duplicate weight was shared (dedup_constants)
    assert not any(r.get("skipped") for r in records)
