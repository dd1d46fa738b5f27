"""INT8 and fp16 conversion with an accuracy budget, and the automatic fp32 fallback."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from compiler.data import DataConfig
from compiler.data.sources import load_dataset
from tests.conftest import TINY


def _rewritten_mlp(folder, widths: list[int], rewrite) -> tuple:
    """Train a digits MLP (64 -> widths... -> 10), apply `rewrite(model)` in place, export it with the data as npz."""
    from omegaconf import OmegaConf

    from compiler.iospec import IOSpec

    data = load_dataset(OmegaConf.structured(DataConfig), IOSpec.single([64]), seed=0)
    torch.manual_seed(0)
    layers, width = [], 64
    for w in widths:
        layers += [torch.nn.Linear(width, w), torch.nn.ReLU()]
        width = w
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(data.x_train["input"]), torch.from_numpy(data.y_train)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        rewrite(model)
    path = folder / "model.onnx"
    torch.onnx.export(model.eval(), (x[:2],), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    npz = folder / "digits.npz"
    np.savez(npz, x=np.concatenate([data.x_train["input"], data.x_test["input"]]), y=np.concatenate([data.y_train, data.y_test]))
    return path, npz


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory):
    """A trained digits MLP rewritten so one hidden unit's activations are 10^4 times larger.

    The function is unchanged in fp32 (ReLU is positively homogeneous), but per-tensor int8
    activations of that layer lose every other unit: a quantization-sensitive model.
    """
    def rewrite(model):
        model[0].weight[0] *= 1e4
        model[0].bias[0] *= 1e4
        model[2].weight[:, 0] /= 1e4

    return _rewritten_mlp(tmp_path_factory.mktemp("outlier"), [32], rewrite)


def _args(model, npz):
    return ["recipe=onnx_file", f"model.path={model}", "data.source=npz", f"data.path={npz}", "engine.precision=int8",
            "verify.latency.iterations=3"]


def test_without_fallback_the_accuracy_gate_fails_with_exit_3(compile_cli, outlier_model):
    run = compile_cli(*_args(*outlier_model), "quantize.fallback=none")
    assert run.code == 3, run.output
    acc = run.report["metrics"]["accuracy"]
    assert acc["fp32"] - acc["engine"] > 0.05  # the outlier really breaks plain int8
    assert any(g["name"] == "accuracy drop vs fp32" and not g["passed"] for g in run.report["gates"])


def test_fallback_auto_restores_accuracy_and_names_the_nodes(compile_cli, outlier_model):
    run = compile_cli(*_args(*outlier_model), "quantize.fallback=auto")
    assert run.code == 0, run.output
    report = run.report
    q = report["quantize"]
    assert q["kept_fp32"] and (report["metrics"]["accuracy"]["fp32"] - report["metrics"]["accuracy"]["engine"]) * 100 <= 0.5
    assert q["snippet"] == "quantize:\n  keep_fp32: [" + ", ".join(q["kept_fp32"]) + "]\n"
    assert "paste this into the recipe" in (run.run_dir / "report.md").read_text()
    # the snippet reproduces the result without the search
    again = compile_cli(*_args(*outlier_model), "quantize.fallback=none", f"quantize.keep_fp32=[{','.join(q['kept_fp32'])}]")
    assert again.code == 0 and again.report["quantize"]["search"] == [q["search"][-1]]


def test_int8_engine_is_a_real_qdq_model(compile_cli):
    run = compile_cli("recipe=cnn_torch", *TINY, "engine.precision=int8")
    assert run.code == 0, run.output
    model = onnx.load(str(run.run_dir / "model.int8.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    ledger = {(r["reference"], r["candidate"]): r for r in run.report["ledger"]}
    assert ("model.clean.onnx", "model.int8.onnx") in ledger and ("model.int8.onnx", "engine") in ledger
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if numpy_helper.to_array(i).dtype == np.int8]
    assert weights  # int8 weight tensors
    assert "--onnx=model.int8.onnx" in run.report["engine"]["reproducers"]["trtexec"]  # TensorRT gets the QDQ model


def test_shallow_first_conv_stays_fp32_with_its_relu_and_pool(compile_cli):
    """The 1-channel 3x3 conv (depth 9) is left fp32, and so are the ReLU and MaxPool after it: Q lands after the pool."""
    run = compile_cli("recipe=cnn_torch", *TINY, "engine.precision=int8")
    assert run.code == 0, run.output
    q = run.report["quantize"]
    assert q["kept_fp32_shallow"] == ["/0/Conv"] and q["kept_fp32"] == []
    assert q["fp32_nodes"] == ["/0/Conv", "/1/Relu", "/2/MaxPool"]
    engine = [n.op_type for n in onnx.load(str(run.run_dir / "model.opt.onnx")).graph.node]
    assert engine[:4] == ["FusedConv", "MaxPool", "QuantizeLinear", "QLinearConv"], engine
    assert run.report["engine"]["disabled_optimizers"] == ["QDQPropagationTransformer"]
    assert "disabled_optimizers=['QDQPropagationTransformer']" in (run.run_dir / "report.md").read_text()
    # depth 0 quantizes every conv, the first one included
    every = compile_cli("recipe=cnn_torch", *TINY, "engine.precision=int8", "quantize.min_reduction_depth=0")
    assert every.code == 0 and every.report["quantize"]["kept_fp32_shallow"] == []
    ops = [n.op_type for n in onnx.load(str(every.run_dir / "model.opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 2 and "FusedConv" not in ops


def test_fp16_and_int8_of_one_recipe_do_not_share_a_cached_conversion(compile_cli):
    fp16 = compile_cli("recipe=cnn_torch", *TINY, "engine.precision=fp16")
    int8 = compile_cli("recipe=cnn_torch", *TINY, "engine.precision=int8")
    assert fp16.code == 0 and int8.code == 0, fp16.output + int8.output
    assert fp16.report["stages"]["quantize"]["artifact"] == "model.fp16.onnx"
    assert int8.report["stages"]["quantize"]["artifact"] == "model.int8.onnx"
    assert not int8.report["stages"]["quantize"]["cached"]
    # the training and export before it are shared
    assert int8.report["stages"]["train"]["cached"] and int8.report["stages"]["surgery"]["cached"]


@pytest.fixture(scope="module")
def overflow_model(tmp_path_factory):
    """A digits MLP whose first hidden layer is rewritten to reach 10^6 (fp16 overflows at 65504).

    Unchanged in fp32 (the next layer scales back), but in fp16 that tensor becomes inf: only the
    layers that produce or read it (/0/Gemm, /1/Relu, /2/Gemm) need fp32; the last layer does not.
    """
    def rewrite(model):
        model[0].weight *= 1e5
        model[0].bias *= 1e5
        model[2].weight /= 1e5

    return _rewritten_mlp(tmp_path_factory.mktemp("overflow"), [32, 32], rewrite)


def _fp16_args(model, npz):
    return ["recipe=onnx_file", f"model.path={model}", "data.source=npz", f"data.path={npz}", "engine.precision=fp16",
            "verify.latency.iterations=3"]


def test_the_overflow_model_really_overflows_fp16(overflow_model):
    model, npz = overflow_model
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model)).graph.initializer}
    first = next(n for n in onnx.load(str(model)).graph.node if n.op_type == "Gemm")
    x = np.load(npz)["x"][:64]
    hidden = x @ weights[first.input[1]].T + weights[first.input[2]]
    assert np.isfinite(hidden).all() and np.isinf(hidden.astype(np.float16)).any()


def test_fp16_without_fallback_converts_every_layer(compile_cli, overflow_model):
    run = compile_cli(*_fp16_args(*overflow_model), "quantize.fallback=none")
    assert run.report["quantize"]["kept_fp32_overflow"] == []
    model = onnx.load(str(run.run_dir / "model.fp16.onnx"))
    inits = {i.name: i.data_type for i in model.graph.initializer}
    assert {inits[n.input[1]] for n in model.graph.node if n.op_type == "Gemm"} == {onnx.TensorProto.FLOAT16}


def test_fp16_keeps_the_overflowing_layers_fp32_and_the_rest_fp16(compile_cli, overflow_model):
    run = compile_cli(*_fp16_args(*overflow_model))
    assert run.code == 0, run.output
    q, acc = run.report["quantize"], run.report["metrics"]["accuracy"]
    assert q["precision"] == "fp16" and q["kept_fp32_overflow"] == ["/0/Gemm", "/1/Relu", "/2/Gemm"]
    assert (acc["fp32"] - acc["engine"]) * 100 <= 0.5
    model = onnx.load(str(run.run_dir / "model.fp16.onnx"))
    types = {n.name: n for n in model.graph.initializer}
    gemms = {n.name: types[n.input[1]].data_type for n in model.graph.node if n.op_type == "Gemm"}
    assert gemms == {"/0/Gemm": onnx.TensorProto.FLOAT, "/2/Gemm": onnx.TensorProto.FLOAT,
                     "/4/Gemm": onnx.TensorProto.FLOAT16}
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]  # fp32 IO kept
    ledger = {(r["reference"], r["candidate"]) for r in run.report["ledger"]}
    assert ("model.clean.onnx", "model.fp16.onnx") in ledger


def test_fp16_keep_list_is_honoured(compile_cli):
    run = compile_cli("recipe=mlp_torch", *TINY, "engine.precision=fp16", "quantize.keep_fp32=[/3/Gemm]")
    assert run.code == 0, run.output
    model = onnx.load(str(run.run_dir / "model.fp16.onnx"))
    inits = {i.name: i.data_type for i in model.graph.initializer}
    kinds = {n.name: inits.get(n.input[1]) for n in model.graph.node if n.op_type == "Gemm"}
    assert kinds.pop("/3/Gemm") == onnx.TensorProto.FLOAT
    assert kinds and set(kinds.values()) == {onnx.TensorProto.FLOAT16}


@pytest.mark.parametrize("precision, level", [("fp16", "all"), ("int8", "disable"), ("fp32", "disable")])
def test_the_converted_models_ledger_runner_folds_its_weight_casts_only_for_fp16_on_the_cpu(precision, level):
    """fp16 weights on onnxruntime's CPU kernels: only at "all" are their fp32 copies made once, at load (every
    lower level recasts every weight on every call, all before the first layer: 6.0 GiB against 2.5 on the 2.25 GiB
    benchmark model). An int8 Q/DQ model keeps "disable": "all" would turn its Q/DQ into integer kernels, which
    the engine's row already measures."""
    from compiler import plan as plan_module
    from compiler.stages.verify import _converted_level
    from tests.conftest import recipe_cfg

    plan = plan_module.resolve(recipe_cfg("cnn_torch", f"engine.precision={precision}"))
    assert not plan.gpu
    assert _converted_level(plan) == level
