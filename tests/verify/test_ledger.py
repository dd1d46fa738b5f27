"""The error ledger over real onnxruntime runners, with either return shape of Polygraphy's compare_accuracy
(0.53: a list, one result per compare function; 0.49-0.52, as TensorRT containers ship it: the result itself)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
from polygraphy.comparator import Comparator

from compiler.verify.ledger import error_ledger


def _scaled(path, scale: float) -> str:
    w = numpy_helper.from_array(np.array([scale], np.float32), "w")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.mark.parametrize("one_result", [False, True], ids=["list", "single"])
def test_the_ledger_reads_either_shape_of_polygraphys_result(tmp_path, monkeypatch, one_result):
    if one_result:
        real = Comparator.compare_accuracy
        monkeypatch.setattr(Comparator, "compare_accuracy", staticmethod(
            lambda *a, **k: (lambda r: r[0] if isinstance(r, list) else r)(real(*a, **k))))
    runners = [OnnxrtRunner(SessionFromOnnx(_scaled(tmp_path / f"m{i}.onnx", s)), name=f"r{i}")
               for i, s in enumerate((1.0, 1.001))]
    x = np.full((2, 3), 2.0, np.float32)
    rows = error_ledger(runners, [("ones", {"x": x})], [(0, 1)], {"": 1e-5}, {"": 1e-5})
    row, = rows
    assert (row["reference"], row["candidate"], row["output"]) == ("r0", "r1", "y")
    assert row["max_abs_error"] == pytest.approx(0.002, rel=1e-3) and row["passed"] is False
    assert row["worst_feed"] == "ones" and row["feeds"] == 1
