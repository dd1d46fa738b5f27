"""An engine is its file plus its runtime settings: written beside it, cached and placed with it, read by every
session that verifies or times it, printed as a reproducer; and where each node runs (the placement probe)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.backends.onnxruntime import (cuda_defaults, describe_copies, drop_saved_copies, engine_session,
                                          graph_capturable, placement, read_runtime, runtime_file)
from compiler.cache import artifact_files, sha256_artifact
from tests.conftest import TINY


def test_a_compile_writes_the_runtime_beside_the_engine_and_reports_it(compile_cli):
    run = compile_cli("recipe=mlp_torch", *TINY)
    assert run.code == 0, run.output
    engine = run.run_dir / "model.opt.onnx"
    settings = json.loads(runtime_file(engine).read_text())
    assert settings == run.report["engine"]["runtime"] == read_runtime(engine)
    assert settings["providers"] == [["CPUExecutionProvider", {}]] and settings["cuda_graph"] is False
    assert settings["session"]["graph_optimization_level"] == "all"
    assert run.report["engine"]["runtime_file"] == "model.opt.runtime.json"
    assert runtime_file(engine) in artifact_files(engine)  # hashed, cached and placed with the engine
    text = (run.run_dir / "report.md").read_text()
    assert "Runtime settings" in text and "ort.InferenceSession('model.opt.onnx'" in text
    session = engine_session(engine, settings)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_the_runtime_settings_are_part_of_the_engines_hash(tmp_path):
    model = tmp_path / "model.opt.onnx"
    model.write_bytes(b"engine")
    plain = sha256_artifact(model)
    runtime_file(model).write_text('{"cuda_graph": true}')
    assert sha256_artifact(model) != plain


def test_placement_counts_nodes_per_provider_and_memcpy(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
                               helper.make_node("Relu", ["m"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w])
    path = tmp_path / "model.opt.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    runtime_file(path).write_text(json.dumps({
        "providers": [["CPUExecutionProvider", {}]], "cuda_graph": False,
        "session": {"graph_optimization_level": "disable", "intra_op_num_threads": 1, "inter_op_num_threads": 0,
                    "disabled_optimizers": [], "custom_op_libraries": []}}))
    placed = placement(path, None, {"x": np.ones((2, 4), np.float32)})
    assert placed["memcpy"] == 0 and placed["by_provider"] == {"CPUExecutionProvider": 2}
    assert placed["cpu_nodes"] == ["mm (MatMul)", "relu (Relu)"]
    assert not graph_capturable(placed)  # no node on the CUDA provider: nothing to capture


@pytest.mark.parametrize("placed, capturable", [
    ({"memcpy": 0, "by_provider": {"CUDAExecutionProvider": 40, "CPUExecutionProvider": 5}}, True),  # shape ops
    ({"memcpy": 2, "by_provider": {"CUDAExecutionProvider": 40, "CPUExecutionProvider": 1}}, False),
    ({"memcpy": 0, "by_provider": {"CPUExecutionProvider": 3}}, False),
    ({}, False),
])
def test_a_graph_is_captured_only_without_memcpy_and_with_nodes_on_the_cuda_provider(placed, capturable):
    assert graph_capturable(placed) is capturable


def _with_saved_copies() -> onnx.ModelProto:
    """A graph as onnxruntime saves it from a CUDA session: a MemcpyToHost and a MemcpyFromHost around a node the
    build session put on the CPU, and a graph output written by a copy."""
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
             helper.make_node("MemcpyToHost", ["m"], ["m_host"], name="Memcpy"),
             helper.make_node("Relu", ["m_host"], ["r_host"], name="relu"),
             helper.make_node("MemcpyFromHost", ["r_host"], ["r"], name="Memcpy_token_3"),
             helper.make_node("Neg", ["r"], ["y"], name="neg"),
             helper.make_node("MemcpyToHost", ["r"], ["z"], name="Memcpy_token_4")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_copies_a_cuda_build_session_saved_are_dropped_and_the_engine_computes_the_same(tmp_path):
    path = tmp_path / "model.opt.onnx"
    onnx.save(_with_saved_copies(), str(path))
    assert drop_saved_copies(path) == 3
    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Relu", "Neg", "Identity"]
    assert [o.name for o in model.graph.output] == ["y", "z"]
    import onnxruntime as ort

    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    y, z = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    expected = np.maximum(x @ np.arange(16, dtype=np.float32).reshape(4, 4), 0)
    np.testing.assert_array_equal(z, expected)
    np.testing.assert_array_equal(y, -expected)
    assert drop_saved_copies(path) == 0  # nothing left to drop: the file is not rewritten


def test_each_copy_is_described_by_its_tensor_producer_and_consumers():
    assert describe_copies(_with_saved_copies().graph) == [
        "MemcpyToHost m: MatMul mm -> Relu relu",
        "MemcpyFromHost r_host: Relu relu -> Neg neg, MemcpyToHost Memcpy_token_4",
        "MemcpyToHost r: MemcpyFromHost Memcpy_token_3 -> graph output",
    ]


def _convolutions(path, count: int) -> None:
    w = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x" if i == 0 else f"c{i - 1}"], [f"c{i}"], name=f"conv{i}") for i in range(count)]
    for node in nodes:
        node.input.append("w")
    nodes.append(helper.make_node("Flatten", [f"c{count - 1}"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("count, layout, expected", [
    (1, "auto", {}),                      # a patch embedding: the transformer keeps the provider's default
    (2, "auto", {"prefer_nhwc": "1"}),    # a convolutional network
    (1, "nhwc", {"prefer_nhwc": "1"}),
    (2, "nchw", {"prefer_nhwc": "0"}),
])
def test_the_cuda_layout_follows_the_convolutions(tmp_path, count, layout, expected):
    path = tmp_path / "model.onnx"
    _convolutions(path, count)
    assert cuda_defaults(path, layout) == expected


def test_copies_are_dropped_from_an_engine_whose_weights_are_external(tmp_path):
    """A large engine keeps its weights in `<engine>.data`: only the graph is rewritten, the weights file stays."""
    import onnxruntime as ort

    w = np.linspace(-1, 1, 512 * 512, dtype=np.float32).reshape(512, 512)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("MemcpyToHost", ["m"], ["m_host"]),
             helper.make_node("Relu", ["m_host"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 512])],
                              [numpy_helper.from_array(w, "w")])
    path = tmp_path / "model.opt.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
              save_as_external_data=True, location="model.opt.onnx.data", size_threshold=1024)
    weights = (tmp_path / "model.opt.onnx.data").read_bytes()
    assert drop_saved_copies(path) == 1
    assert (tmp_path / "model.opt.onnx.data").read_bytes() == weights
    x = np.linspace(0, 1, 1024, dtype=np.float32).reshape(2, 512)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, np.maximum(x @ w, 0), rtol=1e-5, atol=1e-4)
