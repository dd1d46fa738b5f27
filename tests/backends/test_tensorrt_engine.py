"""Real TensorRT engines (fp32, fp16, bf16, int8, dynamic profiles). Needs TensorRT and a CUDA GPU."""

import pytest

from compiler.plan import tensorrt_status
from tests.conftest import TINY

_OK, _WHY = tensorrt_status()
pytestmark = [pytest.mark.tensorrt, pytest.mark.skipif(not _OK, reason=f"TensorRT cannot run here: {_WHY}")]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16", "int8"])
def test_real_engine_builds_and_verifies(compile_cli, precision):
    run = compile_cli("recipe=cnn_torch", *TINY, "engine.backend=tensorrt", f"engine.precision={precision}",
                      "verify.atol=1e-2" if precision != "fp32" else "verify.atol=1e-4", "verify.rtol=1e-1")
    assert run.code == 0, run.output
    assert (run.run_dir / "model.engine").is_file()
    report = run.report
    assert report["engine"]["backend"] == "tensorrt" and report["engine"]["layers"]
    assert report["engine"]["plan"]["strongly_typed"] and report["engine"]["io_tensors"]
    checked = [r["candidate"] for r in report["ledger"] if r["candidate"].startswith("engine[profile")]
    assert checked == [] or checked[0].startswith("engine[profile 1")  # profile 0 is in the main ledger


def test_real_engine_with_two_dynamic_profiles(compile_cli):
    profiles = ("model.profiles=[{input: {min: [1,1,28,28], opt: [2,1,28,28], max: [4,1,28,28]}}, "
                "{input: {min: [8,1,28,28], opt: [16,1,28,28], max: [32,1,28,28]}}]")
    run = compile_cli("recipe=cnn_torch", *TINY, "engine.backend=tensorrt", profiles)
    assert run.code == 0, run.output
    assert sum(r["candidate"].startswith("engine[profile 1") for r in run.report["ledger"]) == 3
