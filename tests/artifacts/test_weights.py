"""Weights stay on disk through import, surgery and the fp16 conversion: read one tensor at a time, written once."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compiler import weights
from compiler.onnx_files import save_model

WIDTH = 512  # 1 MiB per weight: SPILL_BYTES, below LARGE_FOLD_BYTES


def _chain(path, layers: int = 3, transpose_last: bool = False, scale: float = 1.0, bias_step: float = 0.0):
    """Gemm + Relu layers, weights in a .data file; the last weight optionally through a foldable Transpose."""
    rng = np.random.default_rng(0)
    nodes, inits, previous = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((WIDTH, WIDTH)) * scale).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.full(WIDTH, 0.5 + bias_step * i, np.float32), f"b{i}")]
        weight = f"w{i}"
        if transpose_last and i == layers - 1:
            nodes.append(helper.make_node("Transpose", [weight], [f"wt{i}"], perm=[1, 0]))
            weight = f"wt{i}"
        nodes.append(helper.make_node("Gemm", [previous, weight, f"b{i}"], [f"g{i}"]))
        nodes.append(helper.make_node("Relu", [f"g{i}"], ["y" if i == layers - 1 else f"h{i}"]))
        previous = f"h{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)  # onnxruntime 1.31 too
    arrays = {t.name: numpy_helper.to_array(t) for t in inits}
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return arrays


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_a_loaded_model_keeps_its_weights_on_disk_and_reads_one_on_demand(tmp_path):
    original = _chain(tmp_path / "m.onnx")
    model = weights.load(tmp_path / "m.onnx")
    w0 = next(t for t in model.graph.initializer if t.name == "w0")
    assert weights.is_external(w0) and not w0.raw_data
    assert weights.weight_bytes(model) == sum(a.nbytes for a in original.values())
    np.testing.assert_array_equal(weights.read(w0), original["w0"])
    assert not w0.raw_data  # reading did not pull it into the graph


def test_save_writes_each_tensor_once_and_the_copy_runs_the_same(tmp_path):
    _chain(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((2, WIDTH)).astype(np.float32)
    model = weights.load(tmp_path / "m.onnx")
    out = tmp_path / "out" / "m.clean.onnx"
    out.parent.mkdir()
    save_model(model, out, external=True)
    assert (out.parent / "m.clean.onnx.data").stat().st_size == (tmp_path / "m.onnx.data").stat().st_size
    np.testing.assert_array_equal(_run(out, x), _run(tmp_path / "m.onnx", x))
    inline = tmp_path / "inline.onnx"
    save_model(weights.load(tmp_path / "m.onnx"), inline, external=False)  # small enough for one file
    assert not (tmp_path / "inline.onnx.data").exists()
    np.testing.assert_array_equal(_run(inline, x), _run(tmp_path / "m.onnx", x))


def test_surgery_leaves_untouched_weights_on_disk_and_spills_new_ones(tmp_path):
    from compiler.stages.surgery import DEFAULT_PASSES, apply_passes

    _chain(tmp_path / "m.onnx", transpose_last=True)
    x = np.random.default_rng(2).standard_normal((3, WIDTH)).astype(np.float32)
    model = weights.load(tmp_path / "m.onnx")
    with weights.spilling_to(tmp_path / "spill") as into:
        cleaned, records = apply_passes(model, DEFAULT_PASSES, spill_into=into)
        big = [t for t in cleaned.graph.initializer if weights.external_bytes(t) >= WIDTH * WIDTH * 4
               or len(t.raw_data) >= WIDTH * WIDTH * 4]
        assert len(big) == 3 and all(weights.is_external(t) and not t.raw_data for t in big)
        spilled = [t for t in big if "spill" in {e.key: e.value for e in t.external_data}["location"]]
        assert len(spilled) == 1  # the folded Transpose's new weight, written to the spill file at once
        assert "Transpose" not in {n.op_type for n in cleaned.graph.node}
        save_model(cleaned, tmp_path / "clean.onnx", external=True)
    np.testing.assert_allclose(_run(tmp_path / "clean.onnx", x), _run(tmp_path / "m.onnx", x), atol=1e-4)


def test_folding_leaves_nodes_that_read_a_large_constant_and_says_which(tmp_path):
    import onnx_graphsurgeon as gs

    from compiler.passes.fold_constants import hide_large_constants, restore, unfolded_notes

    _chain(tmp_path / "m.onnx", transpose_last=True)
    graph = gs.import_onnx(weights.load(tmp_path / "m.onnx"))
    weights.on_disk_in(graph)
    hidden = hide_large_constants(graph, limit=WIDTH * WIDTH * 4)
    graph.fold_constants(error_ok=False)
    restore(hidden)
    assert "Transpose" in {n.op for n in graph.nodes}
    assert unfolded_notes(hidden, limit=WIDTH * WIDTH * 4) == [
        "not folded: 1 node(s) reading a constant of 1 MiB or more (Transpose)"]


def test_the_fold_pass_returns_its_note_for_the_surgery_record():
    """fold_constants says which nodes it left in its return value (passes.Noted), and the surgery stage puts it
    in that pass's record: no module-level note list carries it."""
    from compiler.stages.surgery import apply_passes
    from compiler.weights import LARGE_FOLD_BYTES

    side = int((LARGE_FOLD_BYTES // 4) ** 0.5)   # a weight of exactly the limit
    w = numpy_helper.from_array(np.ones((side, side), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Transpose", ["w"], ["wt"], name="t"),
                               helper.make_node("MatMul", ["x", "wt"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, side])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _, records = apply_passes(model, ["fold_constants"])
    assert records[0]["notes"] == [f"not folded: 1 node(s) reading a constant of {LARGE_FOLD_BYTES >> 20} MiB or "
                                   "more (t)"]
    _, records = apply_passes(model, ["cleanup"])
    assert "notes" not in records[0]


def test_fp16_conversion_streams_the_weights_from_disk(tmp_path):
    from compiler.stages.fp16 import convert

    original = _chain(tmp_path / "m.onnx")
    convert(tmp_path / "m.onnx", tmp_path / "m.fp16.onnx", [])
    converted = weights.load(tmp_path / "m.fp16.onnx")
    w0 = next(t for t in converted.graph.initializer if t.name == "w0")
    assert w0.data_type == TensorProto.FLOAT16 and weights.is_external(w0)
    expected = original["w0"].astype(np.float16)
    np.testing.assert_array_equal(weights.read(w0), expected)
    assert (tmp_path / "m.fp16.onnx.data").stat().st_size < 0.6 * (tmp_path / "m.onnx.data").stat().st_size
    x = np.random.default_rng(3).standard_normal((2, WIDTH)).astype(np.float32)
    reference = _run(tmp_path / "m.onnx", x)
    assert np.linalg.norm(_run(tmp_path / "m.fp16.onnx", x) - reference) / np.linalg.norm(reference) < 1e-2


def test_a_run_dir_keeps_one_weights_file_where_surgery_changed_no_weight(compile_cli, tmp_path):
    """The cleaned model names model.onnx.data in the run dir (no second copy), runs the same, and a changed
    weight (the folded Transpose) gets a file of its own again."""
    x = np.random.default_rng(3).standard_normal((2, WIDTH)).astype(np.float32)
    for transpose in (False, True):
        src = tmp_path / f"src{int(transpose)}" / "m.onnx"
        src.parent.mkdir()
        # activations of unit size through the layers; biases apart (equal ones would be merged: a changed weight)
        _chain(src, transpose_last=transpose, scale=WIDTH ** -0.5, bias_step=0.1)
        run = compile_cli("recipe=onnx_file", f"model.path={src}", "++model.dims.n=[1,2,4]", "verify.samples=4",
                          "verify.latency.iterations=2", "verify.latency.warmup=1", "verify.latency.batch_sizes=[1]")
        assert run.code == 0, run.output
        data = sorted(p.name for p in run.run_dir.glob("*.data"))
        clean = onnx.load(str(run.run_dir / "model.clean.onnx"), load_external_data=False)
        named = {e.value for t in clean.graph.initializer for e in t.external_data if e.key == "location"}
        assert named == ({"model.clean.onnx.data"} if transpose else {"model.onnx.data"})
        assert "model.onnx.data" in data and ("model.clean.onnx.data" in data) == transpose
        contents = [(run.run_dir / name).read_bytes() for name in data]
        assert len(set(contents)) == len(contents)  # no two weights files in the run dir hold the same bytes
        np.testing.assert_allclose(_run(run.run_dir / "model.clean.onnx", x), _run(src, x), rtol=1e-5, atol=1e-5)


def test_to_float16_is_onnxruntimes_conversion_element_for_element():
    """Edge values (tiny, huge, at the limits, zeros of both signs, inf, NaN) and a chunk boundary crossed."""
    from onnxruntime.transformers.float16 import convert_np_to_float16

    edges = np.array([0.0, -0.0, 1e-9, -1e-9, 5.96e-08, -5.96e-08, 6e-08, 65504.0, -65504.0, 65505.0, 7e4, -7e4,
                      1e30, -1e30, np.inf, -np.inf, np.nan, 1.0, -3.5], np.float32)
    values = np.concatenate([edges, np.random.default_rng(0).standard_normal(weights._FP16_CHUNK + 7)
                             .astype(np.float32) * 1e5]).reshape(-1, 1)
    ours, theirs = weights.to_float16(values), convert_np_to_float16(values)
    assert ours.dtype == theirs.dtype == np.float16 and ours.shape == theirs.shape
    assert ours.tobytes() == theirs.tobytes()


def test_weights_beside_the_model_under_another_name_fold_and_every_written_location_is_relative(compile_cli, tmp_path):
    """Polygraphy's ext_weights_same_dir: three small weights in `ext_weights.data` (not `<model>.data`) summed in
    a chain that folds to one constant. The fold reads every weight of the region it evaluates (onnxruntime
    refuses an absolute location in a model given as bytes), and no file the compiler writes names an absolute
    location."""
    src = tmp_path / "src" / "ext_weights.onnx"
    src.parent.mkdir()
    values = {name: np.full((1, 3), i + 1, np.float32) for i, name in enumerate("abd")}
    nodes = [helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Add", ["c", "d"], ["e"]),
             helper.make_node("Add", ["input", "e"], ["output"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(v, k) for k, v in values.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)  # onnxruntime 1.31 too
    onnx.save_model(model, str(src), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext_weights.data", size_threshold=0)
    run = compile_cli("recipe=onnx_file", f"model.path={src}", "verify.latency.iterations=2",
                      "verify.latency.warmup=1", "verify.latency.batch_sizes=[1]")
    assert run.code == 0, run.output
    clean = onnx.load(str(run.run_dir / "model.clean.onnx"), load_external_data=False)
    assert [n.op_type for n in clean.graph.node] == ["Add"]  # a + b + d folded into one constant
    for written in run.run_dir.glob("*.onnx"):
        locations = [e.value for t in weights.tensors(onnx.load(str(written), load_external_data=False))
                     for e in t.external_data if e.key == "location"]
        assert not any(os.path.isabs(location) or "/" in location for location in locations), (written, locations)
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    out = ort.InferenceSession(str(run.run_dir / "model.clean.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    np.testing.assert_array_equal(out, x + 6)
