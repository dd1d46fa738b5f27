"""INT8: QDQ quantization with an accuracy budget, and the automatic fp32 fallback."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from compiler.data import DataConfig
from compiler.data.sources import load_dataset
from tests.conftest import TINY


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory):
    """A trained digits MLP rewritten so one hidden unit's activations are 10^4 times larger.

    The function is unchanged in fp32 (ReLU is positively homogeneous), but per-tensor int8
    activations of that layer lose every other unit: a quantization-sensitive model.
    """
    from omegaconf import OmegaConf

    folder = tmp_path_factory.mktemp("outlier")
    data = load_dataset(OmegaConf.structured(DataConfig), [64], seed=0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        model[0].weight[0] *= 1e4
        model[0].bias[0] *= 1e4
        model[2].weight[:, 0] /= 1e4
    path = folder / "outlier.onnx"
    torch.onnx.export(model.eval(), (x[:2],), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    npz = folder / "digits.npz"
    np.savez(npz, x=np.concatenate([data.x_train, data.x_test]), y=np.concatenate([data.y_train, data.y_test]))
    return path, npz


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
