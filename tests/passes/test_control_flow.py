"""Every pass is safe on control flow: If, Loop and Scan models (with outer-scope reads from their bodies) agree
before and after each pass on inputs that take each branch and each trip count, and stay valid ONNX.

Models: built with onnx.helper, and exported from torch with a data-dependent branch and loop (TorchScript)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.passes import REGISTRY

F = TensorProto.FLOAT
OPSET = [helper.make_opsetid("", 17)]


def _const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, np.float32)))


def if_model() -> onnx.ModelProto:
    """y = If(cond, then: Relu(h) + (1 + 2), else: Identity(h * 1) * 2), h = x @ w computed outside the branches;
    each branch reads h and w from the outer scope, and holds what the passes fold, remove or merge."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    then = helper.make_graph(
        [_const("one", 1.0), _const("two", 2.0), helper.make_node("Add", ["one", "two"], ["three"]),
         helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Add", ["r", "three"], ["then_out"])],
        "then", [], [helper.make_tensor_value_info("then_out", F, ["b", 3])])
    other = helper.make_graph(
        [_const("unit", 1.0), helper.make_node("Mul", ["h", "unit"], ["h1"]), helper.make_node("Identity", ["h1"], ["h2"]),
         _const("k", 2.0), helper.make_node("Mul", ["h2", "k"], ["m"]), helper.make_node("Mul", ["h2", "k"], ["m2"]),
         helper.make_node("Add", ["m", "m2"], ["else_out"])],
        "else", [], [helper.make_tensor_value_info("else_out", F, ["b", 3])])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Identity", ["h"], ["h_copy"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other),
             helper.make_node("Add", ["y", "h_copy"], ["out"])]
    graph = helper.make_graph(nodes, "if_model", [helper.make_tensor_value_info("x", F, ["b", 4]),
                                                  helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("out", F, ["b", 3])], [w])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=10)


def folded_if_model() -> onnx.ModelProto:
    """An If whose condition folds to a constant (x's static width > 2), whose taken branch computes a value that a
    nested If (on a graph input) reads from its outer scope, and returns a different rank than the other branch:
    folding may inline the taken branch, and must keep the nested If's reads and the output's rank."""
    inner_then = helper.make_graph([helper.make_node("Neg", ["t"], ["inner_a"])], "inner_then", [],
                                   [helper.make_tensor_value_info("inner_a", F, ["b", 4])])
    inner_else = helper.make_graph([helper.make_node("Abs", ["t"], ["inner_b"])], "inner_else", [],
                                   [helper.make_tensor_value_info("inner_b", F, ["b", 4])])
    taken = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"]),
         helper.make_node("If", ["flag"], ["nested"], then_branch=inner_then, else_branch=inner_else)],
        "taken", [], [helper.make_tensor_value_info("nested", F, ["b", 4])])
    other = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["flat"], keepdims=0)], "other", [],
                              [helper.make_tensor_value_info("flat", F, [])])
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), _const_i("one_i", [1]), _const_i("two_i", [2]),
             helper.make_node("Gather", ["shape", "one_i"], ["width"]),
             helper.make_node("Greater", ["width", "two_i"], ["wide1"]),
             helper.make_node("Squeeze", ["wide1"], ["wide"]),
             helper.make_node("If", ["wide"], ["y"], then_branch=taken, else_branch=other)]
    graph = helper.make_graph(nodes, "folded_if", [helper.make_tensor_value_info("x", F, ["b", 4]),
                                                   helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", F, ["b", 4])])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=10)


def _const_i(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, np.int64)))


def loop_model() -> onnx.ModelProto:
    """acc_M = acc_0 + sum over i < M of (acc_i * s + bias); the body reads `s` (computed outside) and `bias`."""
    bias = numpy_helper.from_array(np.full((1, 3), 0.5, np.float32), "bias")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Mul", ["acc_in", "s"], ["scaled"]),
         _const("zero", 0.0), helper.make_node("Add", ["scaled", "zero"], ["scaled0"]),
         helper.make_node("Add", ["scaled0", "bias"], ["acc_out"]), helper.make_node("Identity", ["acc_out"], ["scan"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc_in", F, ["b", 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", F, ["b", 3]), helper.make_tensor_value_info("scan", F, ["b", 3])])
    nodes = [_const("half", 0.5), _const("quarter", 0.25), helper.make_node("Add", ["half", "quarter"], ["s"]),
             helper.make_node("Constant", [], ["true"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
             helper.make_node("Loop", ["trips", "true", "acc0"], ["acc", "steps"], body=body),
             helper.make_node("Identity", ["acc"], ["final"])]
    graph = helper.make_graph(nodes, "loop_model", [helper.make_tensor_value_info("trips", TensorProto.INT64, []),
                                                    helper.make_tensor_value_info("acc0", F, ["b", 3])],
                              [helper.make_tensor_value_info("final", F, ["b", 3]),
                               helper.make_tensor_value_info("steps", F, ["n", "b", 3])], [bias])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=10)


def loop_unused_output_model() -> onnx.ModelProto:
    """The Loop above with its scan output unused: Loop outputs are positional, so it must stay."""
    model = loop_model()
    del model.graph.output[1]
    return model


def scan_model() -> onnx.ModelProto:
    """A running sum over the sequence axis: Scan with a body that reads `gain` from the outer scope."""
    gain = numpy_helper.from_array(np.array([2.0], np.float32), "gain")
    body = helper.make_graph(
        [helper.make_node("Mul", ["x_t", "gain"], ["g"]), helper.make_node("Add", ["sum_in", "g"], ["sum_out"]),
         helper.make_node("Identity", ["sum_out"], ["y_t"])],
        "scan_body", [helper.make_tensor_value_info("sum_in", F, [4]), helper.make_tensor_value_info("x_t", F, [4])],
        [helper.make_tensor_value_info("sum_out", F, [4]), helper.make_tensor_value_info("y_t", F, [4])])
    nodes = [helper.make_node("Scan", ["init", "xs"], ["total", "ys"], body=body, num_scan_inputs=1)]
    graph = helper.make_graph(nodes, "scan_model", [helper.make_tensor_value_info("init", F, [4]),
                                                    helper.make_tensor_value_info("xs", F, ["t", 4])],
                              [helper.make_tensor_value_info("total", F, [4]), helper.make_tensor_value_info("ys", F, ["t", 4])],
                              [gain])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=10)


def torch_model(tmp_path) -> onnx.ModelProto:
    """A TorchScript-scripted module with a data-dependent branch and loop, exported by torch."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            h = self.fc(x)
            if bool(h.sum() > 0):
                h = torch.relu(h) * 2.0
            else:
                h = h - 1.0
            for _ in range(int(n)):
                h = h * 0.5 + self.fc.bias
            return h

    torch.manual_seed(0)
    path = tmp_path / "torch_cf.onnx"
    torch.onnx.export(torch.jit.script(Net()), (torch.randn(2, 4), torch.tensor(2)), str(path), opset_version=17,
                      input_names=["x", "n"], output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                      dynamo=False)
    return onnx.load(str(path))


RNG = np.random.default_rng(0)
FEEDS = {
    "if": [{"x": RNG.standard_normal((3, 4)).astype(np.float32), "cond": np.array(c)} for c in (True, False)],
    "folded_if": [{"x": RNG.standard_normal((3, 4)).astype(np.float32), "flag": np.array(c)} for c in (True, False)],
    "loop": [{"trips": np.array(t, np.int64), "acc0": RNG.standard_normal((2, 3)).astype(np.float32)} for t in (0, 1, 3)],
    "loop_unused": [{"trips": np.array(t, np.int64), "acc0": RNG.standard_normal((2, 3)).astype(np.float32)}
                    for t in (0, 2)],
    "scan": [{"init": np.zeros(4, np.float32), "xs": RNG.standard_normal((t, 4)).astype(np.float32)} for t in (1, 5)],
    "torch": [{"x": s * np.abs(RNG.standard_normal((2, 4))).astype(np.float32), "n": np.array(n, np.int64)}
              for s in (10.0, -10.0) for n in (0, 3)],
}
BUILDERS = {"if": lambda tmp: if_model(), "folded_if": lambda tmp: folded_if_model(), "loop": lambda tmp: loop_model(),
            "loop_unused": lambda tmp: loop_unused_output_model(), "scan": lambda tmp: scan_model(),
            "torch": torch_model}
# passes that need arguments naming tensors, or change the interface or opset on purpose
SKIP = {"extract_subgraph", "replace_with_plugin", "rename_io", "append_postprocess", "set_batch", "set_dim",
        "convert_opset"}
PASSES = [name for name in REGISTRY if name not in SKIP]


def _run(model: onnx.ModelProto, feeds: list[dict]) -> list[list[np.ndarray]]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return [session.run(None, {k: v for k, v in feed.items() if k in names}) for feed in feeds]


def test_the_branches_really_differ():
    """The feeds take each branch and each trip count: their outputs differ."""
    outs = _run(if_model(), FEEDS["if"])
    assert not np.allclose(outs[0][0], outs[1][0])
    loops = _run(loop_model(), FEEDS["loop"])
    assert [o[1].shape[0] for o in loops] == [0, 1, 3]


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("pass_name", PASSES)
def test_each_pass_keeps_control_flow_models_equal_on_every_branch(kind, pass_name, tmp_path):
    from compiler.stages.surgery import apply_passes

    model = BUILDERS[kind](tmp_path)
    before = _run(model, FEEDS[kind])
    after_model, _ = apply_passes(onnx.ModelProto.FromString(model.SerializeToString()), [pass_name])
    onnx.checker.check_model(after_model)
    after = _run(after_model, FEEDS[kind])
    for b, a in zip(before, after):
        for x, y in zip(b, a):
            assert x.shape == y.shape and x.dtype == y.dtype
            np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_the_default_pass_list_keeps_control_flow_models_equal(kind, tmp_path):
    from compiler.stages.surgery import DEFAULT_PASSES, apply_passes

    model = BUILDERS[kind](tmp_path)
    after_model, _ = apply_passes(onnx.ModelProto.FromString(model.SerializeToString()), list(DEFAULT_PASSES))
    onnx.checker.check_model(after_model)
    for b, a in zip(_run(model, FEEDS[kind]), _run(after_model, FEEDS[kind])):
        for x, y in zip(b, a):
            np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)
    ops = {n.op_type for n in after_model.graph.node}
    assert ops & {"If", "Loop", "Scan"}, ops  # the control flow is still there: the inputs decide the branch


def test_a_pass_that_breaks_control_flow_is_dropped_and_reported():
    """The guard: a pass whose result onnxruntime cannot load is dropped, the model kept, the record says why."""
    from compiler.stages.surgery import ControlFlowGuard

    model = loop_unused_output_model()
    broken = onnx.ModelProto.FromString(model.SerializeToString())
    loop = next(n for n in broken.graph.node if n.op_type == "Loop")
    del loop.output[1]  # what graphsurgeon's cleanup did to positional Loop outputs
    guard = ControlFlowGuard(model)
    assert guard.active and guard.broken(model) is None
    assert "Expected 2" in guard.broken(broken)


def test_the_ledger_takes_each_branch_of_a_bool_condition(compile_cli, tmp_path):
    """A foreign If model compiles, and its ledger fed the condition False and True (verify/feeds.py: branch_feeds)."""
    from tests.conftest import TINY

    path = tmp_path / "if.onnx"
    onnx.save(if_model(), path)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", *TINY[2:6])
    assert run.code == 0, run.output
    feeds = run.report["verified_shapes"]
    assert "opt, cond=False" in feeds and "opt, cond=True" in feeds
    assert {"If"} <= {n.op_type for n in onnx.load(str(run.run_dir / "model.clean.onnx")).graph.node}
