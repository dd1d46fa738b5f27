"""Shape-carrying constants stay valid through surgery: Polygraphy's reshape.onnx (an input dim written as -1) once
compiled into a Reshape of -75 that no runtime loads."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compiler.passes import fold_shape_computations, shape_check
from compiler.stages.surgery import ShapeGuard


def _reshape_model(target: list[int], batch="n") -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "t"], ["y"], name="r")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(target, np.int64), "t")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _polygraphy_reshape() -> onnx.ModelProto:
    """As Polygraphy's tests/models/reshape.onnx: Shape -> ReduceProd -> Reshape, its input's dim 0 written -1."""
    nodes = [helper.make_node("Shape", ["data"], ["s"]),
             helper.make_node("ReduceProd", ["s"], ["p"], axes=[0], keepdims=1),
             helper.make_node("Reshape", ["data", "p"], ["output"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [-1, 3, 5, 5])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_each_invalid_shape_constant_is_named_with_its_reason():
    assert shape_check.problems(_reshape_model([-75])) == {"Reshape 'r' target [-75]: a size below -1"}
    assert shape_check.problems(_reshape_model([-1, -1])) == {"Reshape 'r' target [-1, -1]: more than one -1"}
    assert shape_check.problems(_reshape_model([0, -1])) == set()


def test_a_batch_baked_into_a_target_fails_at_the_shapes_it_does_not_fit():
    at = [{"x": (1, 3, 5, 5)}, {"x": (8, 3, 5, 5)}]
    assert shape_check.problems(_reshape_model([8, 75]), at) == {
        "Reshape 'r' target [8, 75] at x [1, 3, 5, 5]: does not hold the input's 75 elements (shape [1, 3, 5, 5])"}
    assert shape_check.problems(_reshape_model([0, 75]), at) == set()
    assert shape_check.problems(_reshape_model([0, 75]), [{"x": (1, 3, 5)}]) == set()  # another rank: not judged


def _one(op: str, inputs: list[str], constants: dict[str, list[int]], x_shape: list[int] | None = None) -> set[str]:
    """The problems of one `op` node reading graph input x (when x_shape) and integer constants."""
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"], name="n")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)] if x_shape else [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return shape_check.problems(model, [{"x": tuple(x_shape)}] if x_shape else [])


def test_expand_tile_constant_of_shape_and_slice():
    assert _one("Expand", ["x", "c"], {"c": [2, 4]}, [2, 3]) == {
        "Expand 'n' shape [2, 4] at x [2, 3]: does not broadcast with the input's shape [2, 3]"}
    assert _one("Expand", ["x", "c"], {"c": [4, 2, 3]}, [2, 3]) == set()
    assert _one("Tile", ["x", "c"], {"c": [2]}, [2, 3]) == {"Tile 'n' repeats [2] at x [2, 3]: 1 repeats for rank 2"}
    assert _one("ConstantOfShape", ["c"], {"c": [2, -3]}) == {"ConstantOfShape 'n' shape [2, -3]: a negative size"}
    assert _one("Slice", ["x", "s", "e", "a", "p"], {"s": [0], "e": [1], "a": [2], "p": [1]}, [2, 3]) == {
        "Slice 'n' axes [2] at x [2, 3]: an axis outside rank 2"}
    assert _one("Slice", ["x", "s", "e", "a", "p"], {"s": [0], "e": [1], "a": [1], "p": [0]}, [2, 3]) == {
        "Slice 'n' steps [0]: a step of 0"}


def test_the_guard_judges_only_problems_a_pass_added():
    shapes = [{"x": (1, 3, 5, 5)}, {"x": (8, 3, 5, 5)}]
    guard = ShapeGuard(_reshape_model([-1, -1]), shapes)  # the file's own problem is the file's
    assert guard.wrong(_reshape_model([-1, -1])) is None
    assert guard.wrong(_reshape_model([0, 75])) is None
    assert guard.wrong(_reshape_model([8, 75])) == ("Reshape 'r' target [8, 75] at x [1, 3, 5, 5]: does not hold "
                                                    "the input's 75 elements (shape [1, 3, 5, 5])")


def test_a_shape_with_a_negative_dim_value_is_not_folded():
    folded = fold_shape_computations.apply(_polygraphy_reshape())
    assert [n.op_type for n in folded.graph.node] == ["Shape", "ReduceProd", "Reshape"]


def test_polygraphy_reshape_compiles_and_its_dim_is_dynamic(compile_cli, tmp_path):
    path = tmp_path / "reshape.onnx"
    onnx.save_model(_polygraphy_reshape(), str(path))
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "verify.latency.iterations=2",
                      "verify.latency.warmup=1", "verify.latency.batch_sizes=[1]")
    assert run.code == 0, run.output
    assert "'data' dim 0 was -1: a dynamic dim ('data_dim0')" in (run.run_dir / "report.md").read_text()
    clean = str(run.run_dir / "model.clean.onnx")
    x = np.random.default_rng(0).standard_normal((3, 3, 5, 5)).astype(np.float32)
    out = ort.InferenceSession(clean, providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
    np.testing.assert_array_equal(out, x.reshape(-1))
