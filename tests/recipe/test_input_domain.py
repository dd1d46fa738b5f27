"""The input domain probe (compiler/input_domain.py): a foreign file's generated inputs are tried on the file
first, and what the file left open is changed, by the documented alternatives, until onnxruntime runs them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tests.conftest import TINY, recipe_cfg


def _save(graph, path, opset: int = 17):
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=10), path)  # onnxruntime 1.31 too
    return path


def audio_model(path):
    """A reflect padding of 256 samples a side: fewer than 257 samples are refused."""
    return _save(h.make_graph(
        [h.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"), h.make_node("ReduceMean", ["p"], ["y"], keepdims=0)],
        "audio", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "samples"])],
        [h.make_tensor_value_info("y", T.FLOAT, ["batch"])], [nh.from_array(np.array([0, 256, 0, 256], np.int64), "pads")]),
        path)


def sample_rate_model(path):
    """A scalar sample rate that only 16000 and 8000 pass (any other reaches a Reshape that cannot hold)."""
    def branch(name, nodes, out, inits=()):
        return h.make_graph(nodes, name, [], [h.make_tensor_value_info(out, T.FLOAT, None)], list(inits))

    bad = branch("bad", [h.make_node("Reshape", ["x", "bad_shape"], ["o2"])], "o2",
                 [nh.from_array(np.array([-1, 7, 13], np.int64), "bad_shape")])
    inner = branch("inner", [h.make_node("Equal", ["sr", "c8k"], ["is8"]),
                             h.make_node("If", ["is8"], ["o3"], then_branch=branch("t8", [h.make_node("Identity", ["x"], ["o1"])], "o1"),
                                         else_branch=bad)], "o3")
    return _save(h.make_graph(
        [h.make_node("Cast", ["sr_in"], ["sr"], to=T.INT64), h.make_node("Equal", ["sr", "c16k"], ["is16"]),
         h.make_node("If", ["is16"], ["y"], then_branch=branch("t16", [h.make_node("Identity", ["x"], ["o4"])], "o4"),
                     else_branch=inner)],
        "vad", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 512]), h.make_tensor_value_info("sr_in", T.INT32, [])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [nh.from_array(np.array(16000, np.int64), "c16k"), nh.from_array(np.array(8000, np.int64), "c8k")]), path)


def fixed_position_model(path):
    """A ViT-like patch embedding with a fixed 14x14 position table: only 224x224 images fit."""
    rng = np.random.default_rng(0)
    return _save(h.make_graph(
        [h.make_node("Conv", ["x", "w"], ["c"], strides=[16, 16]), h.make_node("Reshape", ["c", "s"], ["f"]),
         h.make_node("Add", ["f", "pos"], ["y"])],
        "vit", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 3, "h", "w_dim"])], [h.make_tensor_value_info("y", T.FLOAT, None)],
        [nh.from_array(rng.standard_normal((8, 3, 16, 16)).astype(np.float32) * 0.1, "w"),
         nh.from_array(np.array([0, 8, -1], np.int64), "s"),
         nh.from_array(rng.standard_normal((1, 8, 196)).astype(np.float32), "pos")]), path)


def odd_length_model(path):
    """Runs only where the length is a multiple of 777: no documented alternative reaches it."""
    return _save(h.make_graph(
        [h.make_node("Reshape", ["x", "s"], ["y"])], "odd", [h.make_tensor_value_info("x", T.FLOAT, ["batch", "n"])],
        [h.make_tensor_value_info("y", T.FLOAT, None)], [nh.from_array(np.array([-1, 7, 111], np.int64), "s")]), path)


def _probed(path, *overrides):
    from compiler.input_domain import probe
    from compiler.onnx_io import resolve_onnx_io

    cfg = recipe_cfg("onnx_file", f"model.path={path}", "cache.enabled=false", *overrides)
    from compiler.recipe.resolved import freeze

    problems, opened = resolve_onnx_io(cfg)
    assert problems == []
    result = probe(freeze(cfg), opened)
    return result.resolved.cfg, result


def test_a_longer_sequence_is_found_for_a_reflect_padding(tmp_path):
    cfg, result = _probed(audio_model(tmp_path / "audio.onnx"))
    assert result.problem is None
    assert list(cfg.model.dims.samples) == [512, 512, 512]
    note, = result.notes
    assert "Pad reflect: pre-pad (256) exceeds maximum allowed (15)" in note
    assert "samples = 256: refused, samples = 512: runs" in note
    assert note.endswith("(to choose yourself: ++model.dims.samples=[512,512,512])")


def test_an_enum_input_takes_the_constants_the_graph_compares_it_with(tmp_path):
    cfg, result = _probed(sample_rate_model(tmp_path / "vad.onnx"))
    spec = next(i for i in cfg.model.inputs if i.name == "sr_in")
    assert list(spec["values"]) == [8000, 16000] and spec.range is None
    assert "tried the file's constants as values: runs" in result.notes[0]
    assert "'model.inputs=[{name: sr_in, values: [8000, 16000]}]'" in result.notes[0]


def test_a_fixed_position_table_gets_224(tmp_path):
    cfg, result = _probed(fixed_position_model(tmp_path / "vit.onnx"))
    assert list(cfg.model.dims.h) == [224] * 3 and list(cfg.model.dims.w_dim) == [224] * 3
    assert "tried h/w_dim = 224: runs" in result.notes[0]


def test_what_the_recipe_gave_is_never_changed(tmp_path):
    """The recipe's own sizes are its word: the probe reports the refusal (exit 2) instead of changing them."""
    cfg, result = _probed(audio_model(tmp_path / "audio.onnx"), "++model.dims.samples=[16,16,16]",
                          "++model.dims.batch=[1,4,8]")
    assert list(cfg.model.dims.samples) == [16, 16, 16]
    assert result.problem.path == "model.inputs[x]"
    assert "nothing the recipe left open to try" in result.problem.message
    assert "++model.dims.samples=[min,opt,max]" in result.problem.fix


def test_a_file_that_runs_as_generated_is_left_alone(tmp_path):
    cfg, result = _probed(audio_model(tmp_path / "audio.onnx"), "++model.dims.samples=[300,600,900]")
    assert result.notes == [] and result.problem is None and list(cfg.model.dims.samples) == [300, 600, 900]


def test_an_index_input_is_bounded_by_the_batch_it_indexes(tmp_path):
    """RoiAlign's batch_indices stay below its images' batch: a range bound naming that dim."""
    from compiler.onnx_io import resolve_onnx_io

    path = _save(h.make_graph([h.make_node("RoiAlign", ["x", "rois", "bi"], ["y"], output_height=2, output_width=2)], "roi",
                              [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, 16, 16]),
                               h.make_tensor_value_info("rois", T.FLOAT, ["R", 4]),
                               h.make_tensor_value_info("bi", T.INT64, ["R"])],
                              [h.make_tensor_value_info("y", T.FLOAT, None)]), tmp_path / "roi.onnx", opset=16)
    cfg = recipe_cfg("onnx_file", f"model.path={path}")
    problems, opened = resolve_onnx_io(cfg)
    notes = opened.notes
    assert problems == [] and list(next(i for i in cfg.model.inputs if i.name == "bi").range) == [0, "N"]
    assert "input 'bi' indexes dim 'N' of another input: its values are taken in [0, N)" in notes[0]


def test_probed_domains_compile_and_the_report_says_what_was_tried(compile_cli, tmp_path):
    run = compile_cli("recipe=onnx_file", f"model.path={sample_rate_model(tmp_path / 'vad.onnx')}", *TINY[2:6])
    assert run.code == 0, run.output
    domain = run.report["input_domain"]
    assert domain[0].startswith("input 'sr_in' (int32) has no value range: using [0, 2]")
    assert any("using the file's constants as values" in note for note in domain[1:])
    assert {"opt, sr_in=8000", "opt, sr_in=16000"} <= set(run.report["verified_shapes"])
    assert "Input domain (what the file left open" in (run.run_dir / "report.md").read_text()
    again = compile_cli("recipe=onnx_file", f"model.path={tmp_path / 'vad.onnx'}", *TINY[2:6])
    assert again.code == 0 and again.report["input_domain"] == domain  # the cached verdict, word for word


@pytest.mark.parametrize("cache", ["true", "false"])
def test_no_domain_that_runs_exits_2_before_anything_is_built(compile_cli, tmp_path, cache):
    run = compile_cli("recipe=onnx_file", f"model.path={odd_length_model(tmp_path / 'odd.onnx')}", f"cache.enabled={cache}")
    assert run.code == 2, run.output
    assert "Traceback" not in run.output and not (run.run_dir / "model.onnx").exists()
    assert "model.inputs[x]: onnxruntime refused the generated inputs at 'min': Reshape node:" in run.stderr
    assert "also tried: n = 32: refused" in run.stderr and "n = 4096: refused" in run.stderr
    assert "Fix: declare the domain: the sizes of its dims (++model.dims.batch=[min,opt,max] " \
           "++model.dims.n=[min,opt,max]" in run.stderr


def test_static_zero_size_dims_are_sizes_and_a_shape_input_takes_ones(compile_cli, tmp_path):
    """Polygraphy's empty_tensor_expand: data [2, 0, 3, 0] (static 0-size dims, an empty tensor) expanded to a
    shape given as an int64 input. The 0s stay sizes (no dim to default), and the shape input runs at all ones."""
    path = _save(h.make_graph([h.make_node("Expand", ["data", "new_shape"], ["expanded"])], "expand-empty-tensor",
                              [h.make_tensor_value_info("data", T.FLOAT, [2, 0, 3, 0]),
                               h.make_tensor_value_info("new_shape", T.INT64, [5])],
                              [h.make_tensor_value_info("expanded", T.FLOAT, None)]), tmp_path / "empty.onnx")
    run = compile_cli("recipe=onnx_file", f"model.path={path}", *TINY[2:6])
    assert run.code == 0, run.output
    assert "tried new_shape = 0: refused, new_shape = 1: runs; using new_shape = 1" in run.stderr
    assert "RuntimeWarning" not in run.stderr and "has no range" not in run.stderr
    assert run.report["verified_shapes"] == {"min=opt=max": {"data": [2, 0, 3, 0], "new_shape": [5]}}
