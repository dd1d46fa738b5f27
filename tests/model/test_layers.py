"""The layer list: argument checks, shape inference, and both builders agreeing with it."""

import numpy as np
import pytest

from compiler.model.layers import VOCABULARY, parse_layers

EVERY_LAYER = [
    {"conv2d": {"filters": 8, "kernel": 3, "padding": "same", "activation": "relu"}},
    {"batchnorm": {}},
    {"depthwise_conv2d": {"kernel": 3, "stride": 2, "padding": 1, "multiplier": 2}},
    {"residual": {"filters": 16, "stride": 2}},
    {"maxpool2d": {"size": 2}},
    {"avgpool2d": {"size": [1, 1]}},
    {"activation": {"fn": "gelu"}},
    {"dropout": {"rate": 0.1}},
    {"global_avg_pool": {}},
    {"dense": {"units": 12, "activation": "tanh"}},
    {"flatten": {}},
    {"dense": {"units": 10}},
]


def test_every_layer_type_is_covered_here():
    assert {next(iter(layer)) for layer in EVERY_LAYER} == set(VOCABULARY)


def test_shapes_are_inferred_from_the_input_spec():
    specs, problems = parse_layers(EVERY_LAYER, [3, 28, 28])
    assert problems == []
    assert [s.out_shape for s in specs] == [
        (8, 28, 28), (8, 28, 28), (16, 14, 14), (16, 7, 7), (16, 3, 3), (16, 3, 3), (16, 3, 3), (16, 3, 3),
        (16,), (12,), (12,), (10,)]


def test_seed_cnn_needs_no_hand_computed_flatten_size():
    layers = [{"conv2d": {"filters": 32, "kernel": 3, "padding": "same"}}, {"maxpool2d": {"size": 2}},
              {"conv2d": {"filters": 64, "kernel": 5}}, {"maxpool2d": {"size": 2}}, {"flatten": {}},
              {"dense": {"units": 10}}]
    specs, problems = parse_layers(layers, [1, 28, 28])
    assert problems == [] and specs[4].out_shape == (64 * 5 * 5,)


@pytest.mark.parametrize("layers, path, words", [
    ([{"dense": {"units": 10}}], "model.layers[0].dense", "add `- flatten: {}`"),
    ([{"conv2d": {"filters": 4, "kernal": 3}}], "model.layers[0].conv2d.kernal", "did you mean 'kernel'"),
    ([{"conv2d": {}}], "model.layers[0].conv2d.filters", "missing required layer argument"),
    ([{"conv2d": {"filters": -1}}], "model.layers[0].conv2d.filters", "a positive integer"),
    ([{"conv2d": {"filters": 4, "activation": "relu7"}}], "model.layers[0].conv2d.activation", "one of relu"),
    ([{"convolution": {"filters": 4}}], "model.layers[0]", "unknown layer type"),
    ([{"conv2d": {"filters": 4, "kernel": 40}}], "model.layers[0].conv2d", "too small for this layer"),
    (["flatten"], "model.layers[0]", "one-key mapping"),
])
def test_layer_problems_name_their_path(layers, path, words):
    _, problems = parse_layers(layers, [1, 28, 28])
    assert problems and problems[0].path == path
    assert words in str(problems[0])


def test_torch_builder_matches_inferred_shapes():
    import torch

    from compiler.frameworks.torch.builder import build_sequential

    specs, _ = parse_layers(EVERY_LAYER, [3, 28, 28])
    model = build_sequential(specs).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 28, 28))
    assert tuple(out.shape) == (2, 10)


def test_keras_builder_matches_inferred_shapes():
    pytest.importorskip("keras", reason="the `tensorflow` extra is not installed")
    from omegaconf import OmegaConf

    from compiler.frameworks.keras.builder import build_keras_model

    from compiler.iospec import IOSpec

    cfg = OmegaConf.create({"factory": None, "layers": EVERY_LAYER})
    model = build_keras_model(cfg, IOSpec.single([3, 28, 28]))
    assert tuple(model(np.zeros((2, 28, 28, 3), np.float32)).shape) == (2, 10)
    # same parameter count as torch for a plain conv/dense stack (no BN running stats in torch's count)
    plain = OmegaConf.create({"factory": None, "layers": [
        {"conv2d": {"filters": 8, "kernel": 3}}, {"flatten": {}}, {"dense": {"units": 10}}]})
    from compiler.frameworks.torch.builder import build_torch_model

    torch_params = sum(p.numel() for p in build_torch_model(plain, IOSpec.single([1, 12, 12])).parameters())
    assert build_keras_model(plain, IOSpec.single([1, 12, 12])).count_params() == torch_params
