"""The resolved IO spec: shapes, profiles, export axes, random inputs and its lint, from recipes and files."""

import numpy as np
import pytest

from compiler.iospec import IOSpec, io_problems
from tests.conftest import recipe_cfg


def test_bert_spec_derives_shapes_profiles_axes_and_valid_random_inputs():
    io = IOSpec.from_cfg(recipe_cfg("bert_torch"))
    assert io.input_names == ["input_ids", "attention_mask"] and io.output_names == ["logits"]
    assert io.batch_dim == "batch" and io.fixed_batch is None
    assert io.shapes(1, "max") == {"input_ids": (32, 128), "attention_mask": (32, 128)}
    assert io.shapes(0, "opt", batch=3) == {"input_ids": (3, 32), "attention_mask": (3, 32)}
    assert io.dynamic_axes() == {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                 "logits": {0: "batch"}}
    assert [label for label, _ in io.check_shapes()] == [f"profile {p} {w}" for p in (0, 1) for w in ("min", "opt", "max")]
    feed = io.random_feed(np.random.default_rng(0), io.shapes(1, "max"))
    assert feed["input_ids"].dtype == np.int64 and 0 <= feed["input_ids"].min() and feed["input_ids"].max() < 128
    assert set(np.unique(feed["attention_mask"])) <= {0, 1}
    assert io.latency_batches([1, 32, 500]) == [1, 32]  # clipped to the batch dim's range


def test_a_fixed_batch_is_respected_everywhere():
    io = IOSpec.from_cfg(recipe_cfg("cnn_torch", "model.inputs=[{name: input, shape: [4, 1, 28, 28]}]"))
    assert io.batch_dim is None and io.fixed_batch == 4
    assert io.latency_batches([1, 32]) == [4]
    assert io.engine_profiles() == [{"input": ([4, 1, 28, 28], [4, 1, 28, 28], [4, 1, 28, 28])}]
    assert io.dynamic_axes() == {}


def test_tensorflow_nhwc_puts_the_engine_layout_in_one_place():
    io = IOSpec.from_cfg(recipe_cfg("cnn_tf", "export.input_layout=nhwc"))
    image = io.inputs[0]
    assert image.channels_last and image.shape == ("batch", 28, 28, 1)
    assert image.data_shape(image.shape) == ("batch", 1, 28, 28)
    assert image.to_engine(np.zeros((2, 1, 28, 28))).shape == (2, 28, 28, 1)


@pytest.mark.parametrize("overrides, path, words", [
    (["model.inputs=[{name: a, shape: [batch, n]}]"], "model.inputs[0].shape[1]", "unknown dim name"),
    (["model.inputs=[{name: a, shape: [batch, 3]}, {name: a, shape: [batch, 3]}]"], "model.inputs", "must be unique"),
    (["model.inputs=[{name: a, dtype: int32, shape: [batch, 3]}]"], "model.inputs[0].range", "needs a value range"),
    (["model.inputs=[{name: a, dtype: int32, shape: [batch, 3], range: [5, 5]}]"], "model.inputs[0].range", "low < high"),
    (["model.inputs=[{name: a, shape: [batch, 0]}]"], "model.inputs[0].shape[1]", "must be positive"),
    (["model.dims.batch=[1,2]"], "model.dims.batch", "[min, opt, max] integers"),
    (["model.profiles=[{batch: [4,2,1]}]"], "model.profiles[0].batch", "min <= opt <= max"),
    (["model.outputs=[]"], "model.outputs", "list the model's outputs"),
])
def test_io_lint_names_the_key_path(overrides, path, words):
    problems = io_problems(recipe_cfg("cnn_torch", *overrides))
    assert any(p.path == path and words in str(p) for p in problems), [str(p) for p in problems]


def test_every_io_problem_is_reported_at_once():
    cfg = recipe_cfg("bert_torch", "model.dims.seq=[9,8,7]",
                     "model.inputs=[{name: input_ids, dtype: int64, shape: [batch, seq]}]",
                     "model.profiles=[{ids: {min: [1,1], opt: [1,1], max: [1,1]}}]")
    paths = {p.path for p in io_problems(cfg)}
    assert {"model.dims.seq", "model.inputs[0].range", "model.profiles[0].ids"} <= paths, paths
