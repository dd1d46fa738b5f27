"""String inputs (a scikit-learn ColumnTransformer's columns): fed from the categories the graph itself names, or
from the recipe's `values`; without either, exit 2 with the override that gives them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import TINY


def _pipeline(path, encoder: bool = True) -> None:
    """city and plan, one-hot encoded with the categories fitted on, next to a numeric column, into a linear layer
    (the ai.onnx.ml ops skl2onnx writes for a ColumnTransformer)."""
    rng = np.random.default_rng(0)
    if encoder:
        nodes = [helper.make_node("OneHotEncoder", ["city"], ["c1"], domain="ai.onnx.ml",
                                  cats_strings=["paris", "rome", "oslo"], zeros=1),
                 helper.make_node("OneHotEncoder", ["plan"], ["p1"], domain="ai.onnx.ml", cats_strings=["basic", "pro"],
                                  zeros=1),
                 helper.make_node("Reshape", ["c1", "s3"], ["c2"]), helper.make_node("Reshape", ["p1", "s2"], ["p2"]),
                 helper.make_node("Concat", ["c2", "p2", "num"], ["features"], axis=1)]
        width = 6
    else:  # a hashing step names no categories
        nodes = [helper.make_node("StringNormalizer", ["city"], ["c1"], case_change_action="LOWER"),
                 helper.make_node("Identity", ["num"], ["features"])]
        width = 1
    nodes.append(helper.make_node("MatMul", ["features", "w"], ["logits"]))
    inits = [numpy_helper.from_array(np.array([-1, 3], np.int64), "s3"),
             numpy_helper.from_array(np.array([-1, 2], np.int64), "s2"),
             numpy_helper.from_array(rng.standard_normal((width, 2)).astype(np.float32), "w")]
    inputs = [helper.make_tensor_value_info("city", TensorProto.STRING, ["N", 1]),
              helper.make_tensor_value_info("plan", TensorProto.STRING, ["N", 1]),
              helper.make_tensor_value_info("num", TensorProto.FLOAT, ["N", 1])]
    graph = helper.make_graph(nodes, "pipeline", inputs if encoder else inputs[::2],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 9
    onnx.save(model, str(path))


def test_string_inputs_take_the_categories_the_graph_names(compile_cli, tmp_path):
    path = tmp_path / "pipeline.onnx"
    _pipeline(path)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", *TINY[2:6])
    assert run.code == 0, run.output
    inputs = {i["name"]: i for i in run.report["io_spec"]["inputs"]}
    assert inputs["city"]["dtype"] == "string" and inputs["city"]["values"] == ["paris", "rome", "oslo"]
    assert inputs["plan"]["values"] == ["basic", "pro"]
    assert any("string input 'city' takes the 3 categories its graph names" in n for n in run.report["input_domain"])
    assert run.report["metrics"]["max_abs_error"]["engine"] < 1e-5


def test_the_recipe_can_give_the_strings(compile_cli, tmp_path):
    path = tmp_path / "pipeline.onnx"
    _pipeline(path)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", *TINY[2:6],
                      "model.inputs=[{name: city, values: [rome]}]")
    assert run.code == 0, run.output
    assert {i["name"]: i for i in run.report["io_spec"]["inputs"]}["city"]["values"] == ["rome"]


def test_strings_nobody_names_exit_2_with_the_override(compile_cli, tmp_path):
    path = tmp_path / "hashed.onnx"
    _pipeline(path, encoder=False)
    run = compile_cli("recipe=onnx_file", f"model.path={path}")
    assert run.code == 2 and "Traceback" not in run.stderr
    assert "model.inputs[0].values: string input 'city' needs the strings it takes" in run.stderr
    assert "dtype: string, shape: [batch, 1], values: [paris, rome]" in run.stderr
