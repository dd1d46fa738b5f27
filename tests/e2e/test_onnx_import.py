"""ONNX files from elsewhere through `recipe=onnx_file`: any IO, old IR, external data, broken files."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

FAST = ["verify.latency.iterations=3", "verify.latency.warmup=1"]


class TwoInTwoOut(torch.nn.Module):
    """int64 token ids (an embedding lookup) and a float feature vector in; logits and a count out."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(37, 8)
        self.mix = torch.nn.Linear(8 + 5, 3)

    def forward(self, ids, extra):
        pooled = self.embed(ids).mean(1)
        return self.mix(torch.cat([pooled, extra], 1)), (ids > 10).sum(1)


def _two_in_two_out(path, dynamo=False):
    torch.manual_seed(0)
    args = (torch.randint(0, 37, (2, 6)), torch.randn(2, 5))
    kwargs = {"dynamic_shapes": ({0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}, {0: torch.export.Dim.AUTO})} \
        if dynamo else {"dynamic_axes": {"ids": {0: "batch", 1: "tokens"}, "extra": {0: "batch"}}}
    torch.onnx.export(TwoInTwoOut().eval(), args, str(path), input_names=["ids", "extra"],
                      output_names=["logits", "count"], dynamo=dynamo, **kwargs)
    return path


def test_two_inputs_two_outputs_int64_with_named_dims(compile_cli, tmp_path):
    path = _two_in_two_out(tmp_path / "m.onnx")
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "++model.dims.tokens=[2,6,12]", *FAST)
    assert run.code == 0, run.output
    r = run.report
    spec = r["io_spec"]
    assert [(i["name"], i["dtype"], i["shape"]) for i in spec["inputs"]] == [
        ("ids", "int64", ["batch", "tokens"]), ("extra", "float32", ["batch", 5])]
    assert spec["inputs"][0]["range"] == [0, 37]  # read off the embedding table it indexes
    rows = {(x["candidate"], x["output"]): x for x in r["ledger"]}
    assert rows[("engine", "count")]["exact"] and rows[("engine", "count")]["max_abs_error"] == 0
    assert not rows[("engine", "logits")]["exact"]
    shapes = r["verified_shapes"]
    assert shapes["min"] == {"ids": [1, 2], "extra": [1, 5]} and shapes["max"] == {"ids": [8, 12], "extra": [8, 5]}
    assert any(g["name"] == "accuracy" and "no labelled data" in g["detail"] for g in r["gates"])
    assert "## Inputs and outputs" in (run.run_dir / "report.md").read_text()


def test_dynamo_export_with_external_weights_is_one_artifact(compile_cli, tmp_path, cache_dir):
    path = _two_in_two_out(tmp_path / "m.onnx", dynamo=True)
    data = tmp_path / "m.onnx.data"
    assert data.is_file()  # the dynamo exporter writes the weights beside the model
    run = compile_cli("recipe=onnx_file", f"model.path={path}", *FAST)
    assert run.code == 0, run.output
    assert (run.run_dir / "model.onnx.data").is_file()
    key = run.report["stages"]["export"]["key"]
    weights = bytearray(data.read_bytes())
    weights[-4:] = np.float32(7.0).tobytes()  # same graph file, other weights: another artifact
    data.write_bytes(bytes(weights))
    again = compile_cli("recipe=onnx_file", f"model.path={path}", *FAST)
    assert again.code == 0 and again.report["stages"]["export"]["key"] != key


def test_external_data_may_not_escape_the_model_folder(compile_cli, tmp_path):
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.ones(2, np.float32), "w")]), opset_imports=[helper.make_opsetid("", 17)])
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../secret.bin")
    (tmp_path / "models").mkdir()
    onnx.save(model, str(tmp_path / "models" / "m.onnx"))
    run = compile_cli("recipe=onnx_file", f"model.path={tmp_path / 'models' / 'm.onnx'}")
    assert run.code == 2 and "external data must be a file inside the model's folder" in run.stderr
    assert "../secret.bin" in run.stderr and "Traceback" not in run.output


def test_old_ir_model_zoo_graph_at_its_fixed_batch(compile_cli):
    zoo = __import__("pathlib").Path(onnx.__file__).parent / "backend/test/data/light/light_squeezenet.onnx"
    assert onnx.load(str(zoo)).ir_version == 3  # every initializer is also a graph input
    run = compile_cli("recipe=onnx_file", f"model.path={zoo}", *FAST)
    assert run.code == 0, run.output
    r = run.report
    assert [i["name"] for i in r["io_spec"]["inputs"]] == ["data_0"]  # weights are not inputs
    assert any("initializers listed as graph inputs" in f for f in r["import_fixes"])
    assert list(r["metrics"]["latency_ms"]["engine"]) == ["b1"]  # timed at its own batch
    assert r["verified_shapes"] == {"min=opt=max": {"data_0": [1, 3, 224, 224]}}


def test_conflicting_value_info_is_dropped_and_inferred_again(compile_cli, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Neg", ["h"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, [7, 7, 7])])
    path = tmp_path / "vi.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    run = compile_cli("recipe=onnx_file", f"model.path={path}", *FAST)
    assert run.code == 0, run.output
    assert any("value_info" in f for f in run.report["import_fixes"])


def test_a_model_with_no_inputs(compile_cli, tmp_path):
    graph = helper.make_graph([helper.make_node("Constant", [], ["y"], value=numpy_helper.from_array(
        np.arange(4, dtype=np.float32), "c"))], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    path = tmp_path / "const.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    run = compile_cli("recipe=onnx_file", f"model.path={path}", *FAST)
    assert run.code == 0, run.output
    assert run.report["io_spec"]["inputs"] == []


def test_fp16_inputs_and_outputs(compile_cli, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 2])],
        [numpy_helper.from_array(np.full((4, 2), 0.5, np.float16), "w")])
    path = tmp_path / "half.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "verify.atol=1e-2", *FAST)
    assert run.code == 0, run.output
    assert run.report["io_spec"]["inputs"][0]["dtype"] == "float16"


@pytest.mark.parametrize("op, domain, code, words", [
    ("FancyActivation", "com.example", 2, "custom ops that onnxruntime does not know: FancyActivation (domain com.example)"),
    ("NoSuchOp", "", 1, "onnxruntime cannot load bad.onnx:"),
])
def test_files_onnxruntime_cannot_load_fail_in_one_line(compile_cli, tmp_path, op, domain, code, words):
    imports = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=imports), str(path))
    run = compile_cli("recipe=onnx_file", f"model.path={path}")
    assert run.code == code and words in run.stderr, run.output
    assert "Traceback" not in run.output
    if code == 2:
        assert "engine.onnxruntime.custom_op_libraries" in run.stderr


def test_unknown_input_in_the_recipe_is_a_lint_error(compile_cli, tmp_path):
    path = _two_in_two_out(tmp_path / "m.onnx")
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "model.inputs=[{name: tokens, range: [0, 9]}]")
    assert run.code == 2 and "model.inputs: no such input in the file; got 'tokens'; allowed: ids, extra" in run.stderr


def half_of_the_labels(offset: int = 0):
    """A `verify.metric` factory: the share of samples whose label is below 2 (a task metric of the user's own)."""
    return lambda outputs, labels: float(((labels + offset) < 2).mean()) + 0 * float(outputs["logits"].sum())


def test_npz_arrays_feed_inputs_by_name_and_a_metric_hook_scores_them(compile_cli, tmp_path):
    from tests.conftest import REPO

    path = _two_in_two_out(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    np.savez(tmp_path / "d.npz", ids=rng.integers(0, 37, (120, 6)), extra=rng.standard_normal((120, 5)).astype(np.float32),
             y=labels)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "data.source=npz", f"data.path={tmp_path / 'd.npz'}",
                      "++model.dims.tokens=[6,6,6]", "data.test_fraction=0.5",
                      "+verify.metric={_target_: tests.e2e.test_onnx_import.half_of_the_labels}", *FAST,
                      env={"COMPILER_ALLOWED_TARGETS": "tests.", "PYTHONPATH": str(REPO)})
    assert run.code == 0, run.output
    r = run.report
    assert r["metric"] == "tests.e2e.test_onnx_import.half_of_the_labels"
    assert r["verified_shapes"]["test split"] == {"ids": [8, 6], "extra": [8, 5]}  # real samples, by input name
    accuracy = r["metrics"]["accuracy"]
    assert accuracy["engine"] == accuracy["framework"] and 0.4 < accuracy["engine"] < 0.9  # the hook's figure


def test_dim_names_a_command_line_cannot_address_get_keys_it_can():
    """paddle2onnx names dims `p2o.DynamicDimension.0` (Hydra reads the dots as nesting) and some exporters `?`:
    the first becomes a key with underscores, still one dim wherever the file uses it, without taking a name the
    file itself uses; a name of no letters or digits, or none, is a dim of its own."""
    from compiler.dims import dim_keys

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["p2o.DynamicDimension.0", 3, "?", "w.1"]),
              helper.make_tensor_value_info("y:0", TensorProto.FLOAT, [None, "p2o_DynamicDimension_0",
                                                                       "p2o.DynamicDimension.0", "?", "7x"])]
    assert dim_keys(inputs) == {
        ("x", 0): "p2o_DynamicDimension_0_2", ("x", 2): "x_dim2", ("x", 3): "w_1",
        ("y:0", 0): "y_0_dim0", ("y:0", 1): "p2o_DynamicDimension_0", ("y:0", 2): "p2o_DynamicDimension_0_2",
        ("y:0", 3): "y_0_dim3", ("y:0", 4): "d_7x"}


def _paddle_like(tmp_path):
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("Add", ["m", "y:0"], ["out"])]
    graph = helper.make_graph(nodes, "paddle_like", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["p2o.DynamicDimension.0", 3, "?", "p2o.DynamicDimension.1"]),
        helper.make_tensor_value_info("y:0", TensorProto.FLOAT, ["p2o.DynamicDimension.0", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["p2o.DynamicDimension.0", 3])])
    path = tmp_path / "paddle_like.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_a_recipe_file_may_name_a_dim_as_the_model_file_does(tmp_path):
    from compiler.onnx_io import resolve_onnx_io
    from tests.conftest import recipe_cfg

    cfg = recipe_cfg("onnx_file", f"model.path={_paddle_like(tmp_path)}")
    cfg.model.dims["p2o.DynamicDimension.0"] = [2, 3, 5]  # as YAML can say it: {"p2o.DynamicDimension.0": [2, 3, 5]}
    problems, opened = resolve_onnx_io(cfg)
    notes = opened.notes
    assert problems == []
    assert cfg.model.dims["p2o_DynamicDimension_0"] == [2, 3, 5] and "p2o.DynamicDimension.0" not in cfg.model.dims
    assert not any("dim 0" in note for note in notes)


def test_a_dotted_dim_is_set_by_the_key_its_note_prints(compile_cli, tmp_path):
    path = _paddle_like(tmp_path)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "++model.dims.p2o_DynamicDimension_1=[5,6,7]",
                      "++model.dims.x_dim2=[2,2,3]", *FAST)

    assert run.code == 0, run.output
    assert ("input 'x' dim 0 ('p2o.DynamicDimension.0', called 'p2o_DynamicDimension_0' here) has no range: using "
            "[1, 4, 8]; set ++model.dims.p2o_DynamicDimension_0=[min,opt,max] to choose") in run.stderr
    assert run.report["verified_shapes"]["max"] == {"x": [8, 3, 3, 7], "y:0": [8, 3]}


def test_a_static_zero_size_dim_is_a_real_size(compile_cli, tmp_path):
    """An input of static shape [0, 3] (an empty tensor concatenated on) keeps its 0: it is neither defaulted
    like a dynamic dim nor refused."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Concat", ["x", "e"], ["c"], axis=0), helper.make_node("Relu", ["c"], ["y"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
                                    helper.make_tensor_value_info("e", TensorProto.FLOAT, [0, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "empty.onnx"))
    run = compile_cli("recipe=onnx_file", f"model.path={tmp_path / 'empty.onnx'}")
    assert run.code == 0, run.output
    assert {i["name"]: i["shape"] for i in run.report["io_spec"]["inputs"]}["e"] == [0, 3]
    assert all(shapes["e"] == [0, 3] for shapes in run.report["verified_shapes"].values())
