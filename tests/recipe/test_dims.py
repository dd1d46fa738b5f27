"""Input domains declared, not guessed: dim expressions (`total: past + seq`), ranges from 0, ranges bound by a dim
(index inputs), `values` (enum-like inputs); every shape the IO spec gives honours them, and lint names each
bad declaration by its key path."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.dims import evaluate, order, resolve
from compiler.iospec import IOSpec
from tests.conftest import TINY, recipe_cfg

KV_DIMS = {"batch": [1, 2, 4], "past": [0, 16, 128], "seq": [1, 1, 16], "total": "past + seq"}


def test_expressions_are_evaluated_position_by_position():
    assert resolve(KV_DIMS)["total"] == (1, 17, 144)
    assert evaluate("2 * (a + 1) - b // 2", {"a": 3, "b": 5}) == 6
    assert order({"a": [1, 1, 1], "c": "b + 1", "b": "a * 2"}) == ["b", "c"]


def kv_model(path):
    """y = concat(past, x) * mask: runs only when mask's length is past + seq; idx gathers rows below batch;
    rate (8000 or 16000) scales the output."""
    f = TensorProto.FLOAT
    nodes = [helper.make_node("Concat", ["past", "x"], ["kv"], axis=1),
             helper.make_node("Unsqueeze", ["mask_f", "axes"], ["mask3"]),
             helper.make_node("Cast", ["mask"], ["mask_f"], to=f),
             helper.make_node("Mul", ["kv", "mask3"], ["masked"]),
             helper.make_node("Gather", ["masked", "idx"], ["picked"], axis=0),
             helper.make_node("Cast", ["rate"], ["rate_f"], to=f),
             helper.make_node("Div", ["picked", "rate_f"], ["y"])]
    graph = helper.make_graph(nodes, "kv", [
        helper.make_tensor_value_info("x", f, ["batch", "seq", 4]),
        helper.make_tensor_value_info("past", f, ["batch", "past", 4]),
        helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "total"]),
        helper.make_tensor_value_info("idx", TensorProto.INT64, [2]),
        helper.make_tensor_value_info("rate", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", f, [2, "total", 4])],
        [onnx.numpy_helper.from_array(np.array([2], np.int64), "axes")])
    nodes.sort(key=lambda n: n.op_type != "Cast")  # Casts first: topological order
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)


INPUTS = ("'model.inputs=[{name: mask, range: [0,2]}, {name: idx, range: [0, batch]}, "
          "{name: rate, values: [8000, 16000]}]'")


def _kv_cfg(path, *extra):
    from compiler.onnx_io import resolve_onnx_io

    cfg = recipe_cfg("onnx_file", f"model.path={path}", "model.dims.batch=[1,2,4]", "++model.dims.past=[0,16,128]",
                     "++model.dims.seq=[1,1,16]", "++model.dims.total=past + seq",
                     "model.inputs=[{name: mask, range: [0, 2]}, {name: idx, range: [0, batch]}, "
                     "{name: rate, values: [8000, 16000]}]", *extra)
    problems, _ = resolve_onnx_io(cfg)
    assert problems == []
    return cfg


def test_every_shape_honours_the_relations(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "kv.onnx"
    kv_model(path)
    io = IOSpec.from_cfg(_kv_cfg(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for label, shapes in io.check_shapes():
        assert shapes["mask"][1] == shapes["past"][1] + shapes["x"][1], label
        feed = io.random_feed(rng, shapes)
        assert feed["idx"].max() < shapes["x"][0] and set(np.unique(feed["rate"])) <= {8000, 16000}
        session.run(None, feed)  # onnxruntime accepts every verification feed
    assert io.shapes(0, "min")["past"] == (1, 0, 4)  # an empty KV cache
    profile = io.engine_profiles()[0]
    for i in range(3):
        assert profile["mask"][i][1] == profile["past"][i][1] + profile["x"][i][1]


def test_the_reproducers_shapes_satisfy_total_is_past_plus_seq(tmp_path):
    import re

    from compiler.backends.tensorrt_plan import reproducers
    from compiler.plan import resolve as plan

    path = tmp_path / "kv.onnx"
    kv_model(path)
    cfg = _kv_cfg(path, "engine.backend=tensorrt", "engine.tensorrt.timing_cache=null")
    line = reproducers(plan(cfg), IOSpec.from_cfg(cfg).engine_profiles(), "model.clean.onnx", 1e-4, 1e-3)["trtexec"]
    for key in ("minShapes", "optShapes", "maxShapes"):
        shapes = dict(item.split(":") for item in re.search(rf"--{key}=(\S+)", line).group(1).split(","))
        dims = {k: [int(v) for v in s.split("x") if v] for k, s in shapes.items()}
        assert dims["mask"][1] == dims["past"][1] + dims["x"][1], (key, dims)


def test_a_model_with_related_dims_compiles_and_verifies(compile_cli, tmp_path):
    path = tmp_path / "kv.onnx"
    kv_model(path)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "model.dims.batch=[1,2,4]",
                      "model.dims.past=[0,16,128]", "model.dims.seq=[1,1,16]", "model.dims.total=past + seq",
                      INPUTS.strip("'"), "surgery.passes=[cleanup]", *TINY[2:6])
    assert run.code == 0, run.output
    shapes = run.report["verified_shapes"]
    assert any(s["past"][1] == 0 for s in shapes.values())


@pytest.mark.parametrize("overrides, key, words", [
    (["++model.dims.total=past + sequence"], "model.dims.total", "names 'past', 'sequence', which model.dims does"),
    (["++model.dims.a=b + 1", "++model.dims.b=a + 1"], "model.dims", "form a cycle (a -> b -> a)"),
    (["++model.dims.total=__import__('os')"], "model.dims.total", "not a dim expression"),
    (["model.inputs=[{name: input, shape: [batch,1,28,28], dtype: int8, values: [1, 300]}]"], "model.inputs[0].values",
     "300 does not fit the input's int8"),
    (["model.inputs=[{name: input, shape: [batch,1,28,28], dtype: int64, range: [0, rows]}]"],
     "model.inputs[0].range", "the bound 'rows' names no dim"),
    (["model.dims.batch=[0,1,2]"], "model.dims.batch", "needs 1 <= min <= opt <= max"),
])
def test_bad_domain_declarations_are_named(overrides, key, words):
    from compiler.iospec import io_problems

    problems = [str(p) for p in io_problems(recipe_cfg("cnn_torch", *overrides))]
    assert any(p.startswith(f"{key}: ") and words in p for p in problems), problems


def test_an_npz_that_breaks_the_declared_dims_exits_2(compile_cli, tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, input_ids=np.zeros((20, 300), np.int64), attention_mask=np.ones((20, 300), np.int64),
             y=np.zeros(20, np.int64))
    run = compile_cli("recipe=bert_torch", "data.source=npz", f"data.path={path}", "mode=lint")
    assert run.code == 2
    assert "axis 1 ('seq') has 300, outside model.dims.seq" in run.stderr


def test_inputs_outside_the_models_domain_exit_2_naming_the_keys(compile_cli, tmp_path):
    """The same model without the declared relation: onnxruntime refuses the generated inputs and no documented
    alternative runs (input_domain.py); exit 2 before any stage, not 1 from verify."""
    path = tmp_path / "kv.onnx"
    kv_model(path)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "surgery.passes=[cleanup]", *TINY[2:6])
    assert run.code == 2, run.output
    assert "onnxruntime refused the generated inputs at 'min'" in run.stderr and "also tried:" in run.stderr
    assert "model.dims.total='past + seq'" in run.stderr and "Traceback" not in run.stderr
    assert not (run.run_dir / "model.onnx").exists()


def test_a_dim_spelled_like_the_files_but_named_by_no_input_gets_a_note(tmp_path):
    """`++model.dims.tota=...` leaves `total` at what it was: lint says so, with the override meant."""
    from compiler.onnx_io import resolve_onnx_io

    path = tmp_path / "kv.onnx"
    kv_model(path)
    cfg = recipe_cfg("onnx_file", f"model.path={path}", "model.dims.batch=[1,2,4]", "++model.dims.past=[0,16,128]",
                     "++model.dims.seq=[1,1,16]", "++model.dims.tota=[1,17,144]", "++model.dims.unrelated=[1,1,1]")
    problems, opened = resolve_onnx_io(cfg)
    notes = opened.notes
    assert problems == []
    assert ("model.dims.tota is named by no input of the file, so it has no effect; did you mean 'total'? "
            "(++model.dims.total=[1,17,144])") in notes
    assert not any("unrelated" in n for n in notes)
