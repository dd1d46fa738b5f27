"""The agreement gate (reduced precision without labels): its metrics on known arrays, its budgets, and a foreign
file with no data compiled to fp16 and int8 under it, on the CPU."""

import numpy as np
import pytest

from compiler.model import OutputSpec
from compiler.verify.config import AgreementConfig
from compiler.verify.agreement import budgets, compare, metrics, score
from tests.conftest import TINY
from tests.backends.test_gpu import _overflowing_model


def test_metrics_on_known_arrays():
    ref = [np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], np.float32)]
    same = metrics(ref, ref)
    assert same == {"rel_l2": 0.0, "cosine": pytest.approx(1.0), "argmax": 1.0}
    flipped = metrics(ref, [np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]], np.float32)])
    assert flipped["argmax"] == 0.5 and flipped["rel_l2"] == pytest.approx(np.sqrt(2) / np.sqrt(5))
    assert flipped["cosine"] == pytest.approx(4 / 5)
    assert metrics([np.ones(4, np.float32)], [np.ones(4, np.float32) * 1.01])["argmax"] is None  # not class-like
    assert metrics([np.ones((2, 2))], [np.full((2, 2), np.inf)])["rel_l2"] == float("inf")


def test_budgets_default_by_precision_and_override_per_output():
    outputs = [OutputSpec("logits"), OutputSpec("boxes", rel_l2=0.5)]
    b = budgets("fp16", AgreementConfig(cosine=0.99), outputs)
    assert b[""] == {"rel_l2": 1e-2, "cosine": 0.99, "argmax": 0.9}
    assert b["boxes"]["rel_l2"] == 0.5 and "logits" not in b
    assert budgets("int8", None, [])[""]["rel_l2"] == 0.2


def test_compare_judges_each_float_output_and_skips_integers():
    ref = [{"y": np.ones((4, 3), np.float32), "idx": np.arange(4)}]
    rows = compare(ref, [{"y": np.ones((4, 3), np.float32) * 1.05, "idx": np.arange(4)}], budgets("fp16", None, []))
    assert [r["output"] for r in rows] == ["y"]
    assert rows[0]["held"] == {"rel_l2": False, "cosine": True, "argmax": True} and not rows[0]["passed"]
    assert score(rows) == pytest.approx(-5.0, rel=1e-3)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_a_foreign_file_without_data_compiles_under_the_agreement_gate(compile_cli, tmp_path, precision):
    path = tmp_path / "overflow.onnx"
    _overflowing_model(path)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", f"engine.precision={precision}",
                      "surgery.passes=[cleanup]", *TINY[2:6])
    assert run.code == 0, run.output
    r = run.report
    q = r["quantize"]
    assert q["judged_by"] == "agreement" and q["calibration"].startswith("generated: 64 random valid inputs")
    if precision == "fp16":
        assert {"scale_up", "scale_down"} <= set(q["kept_fp32_overflow"])
        assert "Kept fp32 for range" in (run.run_dir / "report.md").read_text()
    gates = {g["name"]: g for g in r["gates"]}
    assert gates["agreement with strict fp32 [y]"]["passed"], gates
    assert "agreement with the strict-fp32 model is the gate" in gates["accuracy"]["detail"]
    assert "not representative" in (run.run_dir / "report.md").read_text()


def test_the_agreement_gate_fails_what_breaks_its_budget(compile_cli, tmp_path):
    path = tmp_path / "overflow.onnx"
    _overflowing_model(path)
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "engine.precision=int8", "surgery.passes=[cleanup]",
                      "verify.agreement.rel_l2=1e-9", "quantize.fallback=none", *TINY[2:6])
    assert run.code == 3, run.output
    failed = [g for g in run.report["gates"] if not g["passed"]]
    assert [g["name"] for g in failed] == ["agreement with strict fp32 [y]"] and "(<= 1e-09)" in failed[0]["detail"]


def test_an_unlabelled_npz_drives_verification_and_calibration_of_a_foreign_file(compile_cli, tmp_path):
    """data.source=npz with arrays by input name and no labels: the user's inputs are verified and calibrate
    int8, judged by agreement."""
    path = tmp_path / "overflow.onnx"
    _overflowing_model(path)
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((40, 16)).astype(np.float32))
    run = compile_cli("recipe=onnx_file", f"model.path={path}", "data.source=npz", f"data.path={data}",
                      "engine.precision=int8", "surgery.passes=[cleanup]", *TINY[2:6])
    assert run.code == 0, run.output
    r = run.report
    assert r["verified_shapes"]["your inputs"]["x"][0] == 8   # the npz's own rows, up to the batch dim's max
    assert r["quantize"]["calibration"] == "npz data (unlabelled: your inputs)"
    assert r["quantize"]["calibration_samples"] == 32 and r["quantize"]["judged_by"] == "agreement"
