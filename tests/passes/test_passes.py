"""Every registered pass on tiny hand-built graphs: the rewrite it makes and numerical equivalence."""

import numpy as np
from pathlib import Path
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.passes import REGISTRY, parse_pass_list
from compiler.stages.surgery import apply_passes

RNG = np.random.default_rng(0)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    """A model whose output types/shapes (given as None) are filled in by shape inference, as exporters do."""
    graph = helper.make_graph(nodes, "g", inputs, [o if o.type.tensor_type.HasField("shape")
                                                   else helper.make_empty_tensor_value_info(o.name) for o in outputs],
                              list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if any(not o.type.tensor_type.HasField("shape") for o in graph.output):
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return model


def _x(shape, name="x"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _apply(model, entry):
    out, records = apply_passes(model, [entry])
    onnx.checker.check_model(out)
    return out, records


def _feeds(model, batch=3):
    feeds = {}
    for value in model.graph.input:
        dims = [d.dim_value or batch for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = RNG.standard_normal(dims).astype(np.float32)
    return feeds


def _equivalent(before, after, atol=1e-5):
    feeds = _feeds(before)
    for a, b in zip(_run(before, feeds), _run(after, feeds)):
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)


def _ops(model):
    return [n.op_type for n in model.graph.node]


def _conv_bn_model():
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    inits = [_init("w", w), _init("b", RNG.standard_normal(4).astype(np.float32)),
             _init("g", RNG.random(4).astype(np.float32) + 0.5), _init("beta", RNG.standard_normal(4).astype(np.float32)),
             _init("mean", RNG.standard_normal(4).astype(np.float32)), _init("var", RNG.random(4).astype(np.float32) + 0.1)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["y"], epsilon=1e-3)]
    return _model(nodes, [_x(["N", 2, 5, 5])], [_x(None, "y")], inits)


CASES = {
    "fold_constants": (
        lambda: _model([helper.make_node("Add", ["a", "b"], ["ab"]), helper.make_node("Mul", ["x", "ab"], ["y"])],
                       [_x(["N", 4])], [_x(None, "y")], [_init("a", np.ones(4, np.float32)), _init("b", np.ones(4, np.float32))]),
        {}, ["Mul"]),
    "cleanup": (
        lambda: _model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["dead"])],
                       [_x(["N", 4])], [_x(None, "y")], [_init("unused", np.ones(3, np.float32))]),
        {}, ["Relu"]),
    "fuse_parallel_matmuls": (
        lambda: _model([helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
                        helper.make_node("Add", ["q", "k"], ["y"])], [_x(["N", 4])], [_x(None, "y")],
                       [_init("wq", RNG.standard_normal((4, 3)).astype(np.float32)),
                        _init("wk", RNG.standard_normal((4, 3)).astype(np.float32))]),
        {}, ["MatMul", "Split", "Add"]),
    "split_packed_qkv": (  # timm's packed projection: MatMul+Add -> Reshape(.., 3, heads, dim) -> Transpose -> Gather
        lambda: _model([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["mb"]),
                        helper.make_node("Reshape", ["mb", "shape"], ["r"]),
                        helper.make_node("Transpose", ["r"], ["t"], perm=[2, 0, 3, 1, 4]),
                        *[helper.make_node("Gather", ["t", f"i{i}"], [f"g{i}"], axis=0) for i in range(3)],
                        helper.make_node("Transpose", ["g1"], ["g1t"], perm=[0, 1, 3, 2]),
                        helper.make_node("MatMul", ["g0", "g1t"], ["qk"]),
                        helper.make_node("MatMul", ["qk", "g2"], ["y"])],
                       [_x(["N", 5, 4])], [_x(None, "y")],
                       [_init("w", RNG.standard_normal((4, 12)).astype(np.float32)),
                        _init("b", RNG.standard_normal(12).astype(np.float32)),
                        _init("shape", np.array([0, 5, 3, 2, 2], np.int64)),
                        *[_init(f"i{i}", np.array(i, np.int64)) for i in range(3)]]),
        {}, ["MatMul", "MatMul", "MatMul", "Add", "Add", "Add", "Reshape", "Reshape", "Reshape", "Transpose",
             "Transpose", "Transpose", "Transpose", "MatMul", "MatMul"]),
    "scale_after_qk": (  # timm / SDPA: q and k scaled before the product
        lambda: _model([helper.make_node("Mul", ["x", "s"], ["q"]), helper.make_node("Mul", ["kt", "s"], ["k"]),
                        helper.make_node("MatMul", ["q", "k"], ["qk"]), helper.make_node("Softmax", ["qk"], ["y"])],
                       [_x(["N", 2, 5, 4]), _x(["N", 2, 4, 5], "kt")], [_x(None, "y")],
                       [_init("s", np.array(0.5, np.float32))]),
        {}, ["MatMul", "Div", "Softmax"]),
    "merge_duplicate_nodes": (
        lambda: _model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["x"], ["b"]),
                        helper.make_node("Add", ["a", "b"], ["y"])], [_x(["N", 4])], [_x(None, "y")]),
        {}, ["Relu", "Add"]),
    "toposort": (
        lambda: _model([helper.make_node("Neg", ["r"], ["y"]), helper.make_node("Relu", ["x"], ["r"])],
                       [_x(["N", 4])], [_x(["N", 4], "y")]),
        {}, ["Relu", "Neg"]),
    "infer_shapes": (
        lambda: _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])],
                       [_x(["N", 4])], [_x(None, "y")]),
        {}, ["Relu", "Neg"]),
    "eliminate_noops": (
        lambda: _model([
            helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Dropout", ["i"], ["d"]),
            helper.make_node("Cast", ["d"], ["c"], to=TensorProto.FLOAT),
            helper.make_node("Reshape", ["c", "shape"], ["r"]),
            helper.make_node("Transpose", ["r"], ["t"], perm=[0, 1, 2]),
            helper.make_node("Pad", ["t", "pads"], ["p"]),
            helper.make_node("Mul", ["p", "one"], ["m"]), helper.make_node("Add", ["m", "zero"], ["a"]),
            helper.make_node("Expand", ["a", "eshape"], ["e"]), helper.make_node("Concat", ["e"], ["cc"], axis=0),
            helper.make_node("Relu", ["cc"], ["y"])],
            [_x(["N", 3, 4])], [_x(None, "y")],
            [_init("shape", np.array([-1, 3, 4], np.int64)), _init("pads", np.zeros(6, np.int64)),
             _init("one", np.ones((3, 4), np.float32)), _init("zero", np.zeros(4, np.float32)),
             _init("eshape", np.array([1, 3, 4], np.int64))]),
        {}, ["Relu"]),
    "merge_transposes_reshapes": (
        lambda: _model([helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 1]),
                        helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 2, 1]),
                        helper.make_node("Reshape", ["t2", "s1"], ["r1"]), helper.make_node("Reshape", ["r1", "s2"], ["y"])],
                       [_x([2, 3, 4])], [_x(None, "y")],
                       [_init("s1", np.array([6, 4], np.int64)), _init("s2", np.array([2, 12], np.int64))]),
        {}, ["Reshape"]),
    "fuse_batchnorm": (_conv_bn_model, {}, ["Conv"]),
    "fold_mul_add": (
        lambda: _model([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "s"], ["m"]),
                        helper.make_node("Add", ["m", "b"], ["f"]), helper.make_node("Flatten", ["f"], ["fl"]),
                        helper.make_node("MatMul", ["fl", "w2"], ["mm"]), helper.make_node("Add", ["mm", "b2"], ["y"])],
                       [_x(["N", 2, 3, 3])], [_x(None, "y")],
                       [_init("w", RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)),
                        _init("s", RNG.standard_normal((4, 1, 1)).astype(np.float32)),
                        _init("b", RNG.standard_normal((1, 4, 1, 1)).astype(np.float32)),
                        _init("w2", RNG.standard_normal((4, 5)).astype(np.float32)),
                        _init("b2", RNG.standard_normal(5).astype(np.float32))]),
        {}, ["Conv", "Flatten", "Gemm"]),
    "fuse_pad_into_conv": (
        lambda: _model([helper.make_node("Pad", ["x", "pads"], ["p"]),
                        helper.make_node("Conv", ["p", "w"], ["y"], pads=[0, 1, 0, 1])],
                       [_x(["N", 2, 5, 5])], [_x(None, "y")],
                       [_init("pads", np.array([0, 0, 1, 0, 0, 0, 1, 2], np.int64)),
                        _init("w", RNG.standard_normal((3, 2, 3, 3)).astype(np.float32))]),
        {}, ["Conv"]),
    "dedup_constants": (
        lambda: _model([helper.make_node("Add", ["x", "a"], ["s"]), helper.make_node("Mul", ["s", "b"], ["y"])],
                       [_x(["N", 4])], [_x(None, "y")],
                       [_init("a", np.full(4, 2, np.float32)), _init("b", np.full(4, 2, np.float32))]),
        {}, ["Add", "Mul"]),
    "fold_shape_computations": (
        lambda: _model([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "two"], ["d"], axis=0),
                        helper.make_node("Cast", ["d"], ["df"], to=TensorProto.FLOAT), helper.make_node("Sqrt", ["df"], ["sq"]),
                        helper.make_node("Div", ["x", "sq"], ["xd"]),
                        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0), helper.make_node("Mul", ["n", "three"], ["n3"]),
                        helper.make_node("Unsqueeze", ["n3", "axes"], ["n3u"]),
                        helper.make_node("Concat", ["n3u", "four"], ["target"], axis=0),
                        helper.make_node("Reshape", ["xd", "target"], ["y"])],
                       [_x(["N", 3, 4])], [_x(None, "y")],
                       [_init("two", np.array(2, np.int64)), _init("zero", np.array(0, np.int64)),
                        _init("three", np.array(3, np.int64)), _init("axes", np.array([0], np.int64)),
                        _init("four", np.array([4], np.int64))]),
        {}, ["Div", "Reshape"]),
    "simplify_reshape": (
        lambda: _model([helper.make_node("Shape", ["x"], ["sh"]),
                        helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0),
                        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
                        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
                        helper.make_node("Reshape", ["x", "target"], ["y"])],
                       [_x(["N", 3, 4])], [_x(None, "y")],
                       [_init("zero", np.array(0, np.int64)), _init("axes", np.array([0], np.int64)),
                        _init("minus1", np.array([12], np.int64))]),
        {}, ["Reshape"]),
    "fold_transpose_into_gemm": (
        lambda: _model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
                        helper.make_node("Reshape", ["t", "s"], ["r"]), helper.make_node("Gemm", ["r", "w"], ["y"])],
                       [_x(["N", 2, 3, 4])], [_x(None, "y")],
                       [_init("s", np.array([0, 24], np.int64)),
                        _init("w", RNG.standard_normal((24, 5)).astype(np.float32))]),
        {}, ["Reshape", "Gemm"]),
    "set_batch": (
        lambda: _model([helper.make_node("Relu", ["x"], ["y"])], [_x(["N", 4])], [_x(["N", 4], "y")]),
        {"size": 3}, ["Relu"]),
    "set_dim": (
        lambda: _model([helper.make_node("Relu", ["x"], ["y"])], [_x(["N", "L"])], [_x(["N", "L"], "y")]),
        {"name": "L", "size": 4}, ["Relu"]),
    "rename_io": (
        lambda: _model([helper.make_node("Relu", ["x"], ["y"])], [_x(["N", 4])], [_x(None, "y")]),
        {"inputs": {"x": "images"}, "outputs": {"y": "scores"}}, ["Relu"]),
    "append_postprocess": (
        lambda: _model([helper.make_node("Relu", ["x"], ["y"])], [_x(["N", 4])], [_x(None, "y")]),
        {}, ["Relu", "Softmax", "ArgMax"]),
    "extract_subgraph": (
        lambda: _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])],
                       [_x(["N", 4])], [_x(["N", 4], "y")]),
        {"inputs": ["x"], "outputs": ["r"]}, ["Relu"]),
    "replace_with_plugin": (
        lambda: _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["n"]),
                        helper.make_node("Abs", ["n"], ["y"])], [_x(["N", 4])], [_x(None, "y")]),
        {"op": "MyPlugin", "inputs": ["r"], "outputs": ["n"], "domain": "trt.plugins", "attrs": {"alpha": 2.0}},
        ["Relu", "MyPlugin", "Abs"]),
    "convert_opset": (
        lambda: _model([helper.make_node("Relu", ["x"], ["y"])], [_x(["N", 4])], [_x(None, "y")], opset=13),
        {"version": 17}, ["Relu"]),
    "strip_doc_strings": (
        lambda: _model([helper.make_node("Relu", ["x"], ["y"], doc_string="File torch/nn/x.py line 1")],
                       [_x(["N", 4])], [_x(None, "y")]),
        {}, ["Relu"]),
}


def test_every_registered_pass_has_a_case():
    assert set(CASES) == set(REGISTRY)


@pytest.mark.parametrize("name", sorted(CASES))
def test_pass_rewrites_and_keeps_numerics(name):
    build, args, expected_ops = CASES[name]
    before = build()
    after, records = _apply(before, {name: args} if args else name)
    assert _ops(after) == expected_ops
    assert records[0]["nodes_before"] == len(before.graph.node) and records[0]["nodes_after"] == len(after.graph.node)
    if name == "replace_with_plugin":
        node = after.graph.node[1]
        assert node.domain == "trt.plugins" and node.attribute[0].f == 2.0
        return  # a plugin op does not run in onnxruntime
    if name == "extract_subgraph":
        assert [o.name for o in after.graph.output] == ["r"]
        return
    if name == "rename_io":
        assert after.graph.input[0].name == "images" and after.graph.output[0].name == "scores"
        feeds = _feeds(before)
        np.testing.assert_allclose(_run(before, feeds)[0], _run(after, {"images": feeds["x"]})[0])
        return
    if name in ("set_batch", "set_dim"):
        dims = [d.dim_value for d in after.graph.input[0].type.tensor_type.shape.dim]
        assert dims == ([3, 4] if name == "set_batch" else [0, 4])
        return
    if name == "append_postprocess":
        feeds = _feeds(before)
        y, probabilities, labels = _run(after, feeds)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(labels, y.argmax(-1))
        return
    if name == "strip_doc_strings":
        assert after.graph.node[0].doc_string == ""
    if name == "dedup_constants":
        assert len(after.graph.initializer) == 1
    if name == "convert_opset":
        assert after.opset_import[0].version == 17
    _equivalent(before, after)


def test_zero_initial_lstm_state_is_dropped():
    hidden, size = 3, 2
    inits = [_init("W", RNG.standard_normal((1, 4 * hidden, size)).astype(np.float32)),
             _init("R", RNG.standard_normal((1, 4 * hidden, hidden)).astype(np.float32)),
             _init("zshape", np.array([1, 1, hidden], np.int64))]
    model = _model([helper.make_node("ConstantOfShape", ["zshape"], ["h0"]),
                    helper.make_node("LSTM", ["x", "W", "R", "", "", "h0"], ["y"], hidden_size=hidden)],
                   [_x([5, 1, size])], [_x(None, "y")], inits)
    after, _ = _apply(model, "eliminate_noops")
    assert _ops(after) == ["LSTM"] and list(after.graph.node[0].input)[5:] in ([], [""])
    _equivalent(model, after)


def test_set_batch_back_to_dynamic():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_x([8, 4])], [_x([8, 4], "y")])
    after, _ = _apply(model, {"set_batch": {"size": "dynamic"}})
    assert after.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_fuse_batchnorm_into_gemm_with_transposed_weight():
    inits = [_init("w", RNG.standard_normal((5, 4)).astype(np.float32)), _init("b", np.zeros(5, np.float32)),
             _init("g", RNG.random(5).astype(np.float32) + 0.5), _init("beta", RNG.standard_normal(5).astype(np.float32)),
             _init("mean", RNG.standard_normal(5).astype(np.float32)), _init("var", RNG.random(5).astype(np.float32) + 0.1)]
    model = _model([helper.make_node("Gemm", ["x", "w", "b"], ["c"], transB=1),
                    helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["y"])],
                   [_x(["N", 4])], [_x(None, "y")], inits)
    after, _ = _apply(model, "fuse_batchnorm")
    assert _ops(after) == ["Gemm"]
    _equivalent(model, after)


def test_noop_that_feeds_a_graph_output_keeps_the_output_name():
    model = _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])],
                   [_x(["N", 4])], [_x(None, "y")])
    after, _ = _apply(model, "eliminate_noops")
    assert _ops(after) == ["Relu"] and after.graph.output[0].name == "y"
    _equivalent(model, after)


def test_passes_leave_what_they_must_not_touch():
    mul_by_two = _model([helper.make_node("Mul", ["x", "two"], ["y"])], [_x(["N", 4])], [_x(None, "y")],
                        [_init("two", np.full(4, 2, np.float32))])
    assert _ops(_apply(mul_by_two, "eliminate_noops")[0]) == ["Mul"]
    real_transpose = _model([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], [_x([3, 4])], [_x(None, "y")])
    assert _ops(_apply(real_transpose, "eliminate_noops")[0]) == ["Transpose"]
    broadcasting_add = _model([helper.make_node("Add", ["x", "z"], ["y"])], [_x(["N", 1])], [_x(None, "y")],
                              [_init("z", np.zeros(4, np.float32))])  # changes the shape: not a no-op
    assert _ops(_apply(broadcasting_add, "eliminate_noops")[0]) == ["Add"]


@pytest.mark.parametrize("entry, words", [
    ("fold_constant", "did you mean 'fold_constants'"),
    ({"set_batch": {"sise": 3}}, "unknown pass argument"),
    ({"replace_with_plugin": {"op": "X"}}, "missing required pass argument"),
    ({"_target_": "os.system"}, "not on the allow-list"),
    (42, "a pass is a name"),
])
def test_bad_pass_entries_name_the_list_index(entry, words):
    _, problems = parse_pass_list(["cleanup", entry])
    assert problems and problems[0].path.startswith("surgery.passes[1]") and words in str(problems[0])


def test_cleanup_keeps_the_model_interface_unless_asked():
    def model():
        return _model([helper.make_node("Relu", ["x"], ["y"])], [_x(["N", 4]), _x(["N", 2], "unused")],
                      [_x(None, "y")])

    kept, _ = _apply(model(), "cleanup")
    assert [i.name for i in kept.graph.input] == ["x", "unused"]
    dropped, _ = _apply(model(), {"cleanup": {"remove_unused_inputs": True}})
    assert [i.name for i in dropped.graph.input] == ["x"]


def custom_pass(model, suffix="_x"):
    """A user pass reached through `_target_` (allow-listed via COMPILER_ALLOWED_TARGETS)."""
    model.graph.node[0].name += suffix
    return model


def test_custom_pass_through_an_allow_listed_target(monkeypatch):
    monkeypatch.setenv("COMPILER_ALLOWED_TARGETS", "tests.")
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_x(["N", 4])], [_x(None, "y")])
    after, records = _apply(model, {"_target_": "tests.passes.test_passes.custom_pass", "suffix": "_custom"})
    assert after.graph.node[0].name == "relu_custom" and records[0]["pass"] == "tests.passes.test_passes.custom_pass"


def test_cleanup_never_shifts_a_nodes_positional_outputs():
    """An LSTM whose sequence output Y nobody reads keeps Y (unnamed use, same position), so Y_h stays Y_h; the
    unused trailing Y_c goes. graphsurgeon alone drops Y and hands Y_h's readers Y_c."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from compiler.passes import cleanup

    rng = np.random.default_rng(0)
    weights = [nh.from_array(rng.standard_normal(s).astype(np.float32), n)
               for n, s in (("W", (1, 32, 4)), ("R", (1, 32, 8)))]
    graph = h.make_graph([h.make_node("LSTM", ["x", "W", "R"], ["y", "y_h", "y_c"], hidden_size=8),
                          h.make_node("Relu", ["y_h"], ["out"])], "lstm",
                         [h.make_tensor_value_info("x", T.FLOAT, [5, 2, 4])], [h.make_tensor_value_info("out", T.FLOAT, None)],
                         weights)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    cleaned = cleanup.apply(model)
    lstm = next(n for n in cleaned.graph.node if n.op_type == "LSTM")
    assert list(lstm.output) == ["y", "y_h"]
    x = {"x": rng.standard_normal((5, 2, 4)).astype(np.float32)}
    run = [ort.InferenceSession(m.SerializeToString()).run(None, x)[0] for m in (model, cleaned)]
    np.testing.assert_array_equal(run[0], run[1])


def test_a_slice_of_a_slice_on_other_axes_becomes_one_slice():
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from compiler.passes import merge_transposes_reshapes

    c = lambda name, v: nh.from_array(np.array(v, np.int64), name)  # noqa: E731
    graph = h.make_graph([h.make_node("Slice", ["x", "s1", "e1", "a1"], ["t"]),
                          h.make_node("Slice", ["t", "s2", "e2", "a2", "st2"], ["y"])], "slices",
                         [h.make_tensor_value_info("x", T.FLOAT, ["n", 6, 8])], [h.make_tensor_value_info("y", T.FLOAT, None)],
                         [c("s1", [1]), c("e1", [5]), c("a1", [-1]), c("s2", [4]), c("e2", [0]), c("a2", [1]), c("st2", [-2])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    merged = merge_transposes_reshapes.apply(model)
    assert [n.op_type for n in merged.graph.node] == ["Slice"]
    x = {"x": np.random.default_rng(0).standard_normal((3, 6, 8)).astype(np.float32)}
    run = [ort.InferenceSession(m.SerializeToString()).run(None, x)[0] for m in (model, merged)]
    np.testing.assert_array_equal(run[0], run[1])
    assert run[0].shape == (3, 2, 4)


def test_q_k_v_projections_become_one_matmul_and_a_split():
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from compiler.passes import fuse_parallel_matmuls

    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.standard_normal((8, n)).astype(np.float32), f"w{i}") for i, n in enumerate((8, 8, 4))]
    inits.append(nh.from_array(rng.standard_normal((6, 8)).astype(np.float32), "other_depth"))
    nodes = [h.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"]) for i in range(3)]
    nodes += [h.make_node("Concat", ["m0", "m1", "m2"], ["y"], axis=-1), h.make_node("MatMul", ["z", "other_depth"], ["u"])]
    graph = h.make_graph(nodes, "qkv", [h.make_tensor_value_info("x", T.FLOAT, ["b", 5, 8]),
                                        h.make_tensor_value_info("z", T.FLOAT, ["b", 6])],
                         [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("u", T.FLOAT, None)], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    fused = fuse_parallel_matmuls.apply(model)
    assert sorted(n.op_type for n in fused.graph.node) == ["Concat", "MatMul", "MatMul", "Split"]
    feed = {"x": rng.standard_normal((2, 5, 8)).astype(np.float32), "z": rng.standard_normal((2, 6)).astype(np.float32)}
    before, after = (ort.InferenceSession(m.SerializeToString()).run(None, feed) for m in (model, fused))
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_shape_arithmetic_sees_through_a_reshape_minus_one():
    """x [b, 3, 4] reshaped to [b, -1]: onnx's inference names the -1 afresh, onnxruntime's symbolic inference
    knows it is 12, so a divisor read from that shape folds to a constant (ddddocr's OCR head, the KV decoders)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from compiler.passes import fold_shape_computations

    c = lambda name, v: nh.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             h.make_node("Unsqueeze", ["b", "axes"], ["u"]), h.make_node("Concat", ["u", "minus_one"], ["target"], axis=0),
             h.make_node("Reshape", ["x", "target"], ["r"]), h.make_node("Shape", ["r"], ["s2"]),
             h.make_node("Gather", ["s2", "one"], ["width"], axis=0), h.make_node("Cast", ["width"], ["w"], to=T.FLOAT),
             h.make_node("Div", ["r", "w"], ["y"])]
    graph = h.make_graph(nodes, "minus_one", [h.make_tensor_value_info("x", T.FLOAT, ["b", 3, 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)],
                         [c("zero", 0), c("one", 1), c("axes", [0]), c("minus_one", [-1])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    before_files = set(Path.cwd().iterdir())
    folded = fold_shape_computations.apply(model)
    assert [n.op_type for n in folded.graph.node] == ["Reshape", "Div"]
    assert set(Path.cwd().iterdir()) == before_files  # onnxruntime's inference writes scratch files: not here
    x = {"x": np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)}
    before, after = (ort.InferenceSession(m.SerializeToString()).run(None, x)[0] for m in (model, folded))
    np.testing.assert_array_equal(before, after)


def test_a_dynamo_reshape_with_allowzero_to_its_own_shape_is_removed():
    """torch's dynamo exporter writes `view(ids, [-1, ids.size(1)])` as Reshape(allowzero=1) of a Concat of Shape:
    with no literal 0 in the target, allowzero changes nothing, the target folds to [-1, 0] (0 copies the dim)
    and the no-op goes (GPT-2's and BERT's input views; onnxslim removes them too). A literal 0 keeps it."""
    from onnx import TensorProto as T

    def model(head):
        c = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
        nodes = [helper.make_node("Shape", ["ids"], ["s"], start=1, end=2),
                 helper.make_node("Concat", ["head", "s"], ["target"], axis=0),
                 helper.make_node("Reshape", ["ids", "target"], ["r"], allowzero=1),
                 helper.make_node("Cast", ["r"], ["y"], to=T.FLOAT)]
        graph = helper.make_graph(nodes, "view", [helper.make_tensor_value_info("ids", T.INT64, ["b", "s"])],
                                  [helper.make_tensor_value_info("y", T.FLOAT, None)], [c("head", [head])])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    out, _ = apply_passes(model(-1), ["fold_shape_computations", "eliminate_noops", "cleanup"])
    assert [n.op_type for n in out.graph.node] == ["Cast"]
    ids = {"ids": np.arange(12, dtype=np.int64).reshape(3, 4)}
    np.testing.assert_array_equal(_run(out, ids)[0], _run(model(-1), ids)[0])
    kept, _ = apply_passes(model(0), ["fold_shape_computations", "eliminate_noops", "cleanup"])
    assert [n.op_type for n in kept.graph.node] == ["Shape", "Concat", "Reshape", "Cast"]


def test_an_unsqueeze_of_a_reshape_becomes_one_reshape():
    """torch's dynamo export views packed q/k/v as Reshape [10, 2, 3, 64] then Unsqueeze(0): one Reshape to
    [1, 10, 2, 3, 64]. A Reshape that another node reads too, or whose target copies a dim (0), stays."""
    def model(target, extra_reader=False):
        nodes = [helper.make_node("Reshape", ["x", "t"], ["r"]), helper.make_node("Unsqueeze", ["r", "axes"], ["y"])]
        outputs = [_x(None, "y")]
        if extra_reader:
            nodes.append(helper.make_node("Relu", ["r"], ["z"]))
            outputs.append(_x(None, "z"))
        return _model(nodes, [_x([10, 2, 192])], outputs,
                      [_init("t", np.array(target, np.int64)), _init("axes", np.array([0], np.int64))])

    out, _ = _apply(model([10, 2, 3, 64]), "merge_transposes_reshapes")
    assert [n.op_type for n in out.graph.node] == ["Reshape"]
    assert numpy_helper.to_array(next(i for i in out.graph.initializer if i.name == out.graph.node[0].input[1])).tolist() \
        == [1, 10, 2, 3, 64]
    _equivalent(model([10, 2, 3, 64]), out)
    for kept in (model([0, 2, 3, 64]), model([10, 2, 3, 64], extra_reader=True)):
        assert [n.op_type for n in _apply(kept, "merge_transposes_reshapes")[0].graph.node][:2] == ["Reshape", "Unsqueeze"]


def test_a_mul_by_a_scalar_one_goes_even_where_the_shape_is_unknown():
    """onnxmltools ends a LightGBM classifier with Mul(probabilities, 1.0) after an ai.onnx.ml tree whose output
    shape inference cannot give: a scalar never changes the shape, so the no-op goes."""
    model = _model([helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Mul", ["r", "one"], ["m"]),
                    helper.make_node("Relu", ["m"], ["y"])],  # r: a shape (even a rank) inference cannot give
                   [_x(["n"]), helper.make_tensor_value_info("s", TensorProto.INT64, ["k"])], [_x(["a", "b"], "y")],
                   [_init("one", np.array(1.0, np.float32))])
    out, _ = _apply(model, "eliminate_noops")
    assert [n.op_type for n in out.graph.node] == ["Reshape", "Relu"]
    x = {"x": RNG.standard_normal(6).astype(np.float32), "s": np.array([3, 2], np.int64)}
    np.testing.assert_array_equal(_run(out, x)[0], _run(model, x)[0])
