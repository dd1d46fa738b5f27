"""Data sources: built-in digits, user npz arrays, synthetic data; deterministic splits."""

import numpy as np
from omegaconf import OmegaConf

from compiler.data import DataConfig
from compiler.data.sources import load_dataset, resize_bilinear
from compiler.iospec import IOSpec


def _cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), kw)


def test_digits_are_resized_normalised_and_split_by_seed():
    a = load_dataset(_cfg(), IOSpec.single([1, 28, 28]), seed=0)
    b = load_dataset(_cfg(), IOSpec.single([1, 28, 28]), seed=0)
    c = load_dataset(_cfg(), IOSpec.single([1, 28, 28]), seed=1)
    assert a.x_train['input'].shape[1:] == (1, 28, 28) and a.x_train['input'].dtype == np.float32
    assert len(a.y_train) + len(a.y_test) == 1797 and len(a.y_test) == 359
    assert 0.0 <= a.x_train['input'].min() and a.x_train['input'].max() <= 1.0
    assert a.num_classes == 10
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)


def test_digits_as_flat_vectors_and_limit():
    d = load_dataset(_cfg(limit=100), IOSpec.single([64]), seed=0)
    assert d.x_train['input'].shape == (80, 64) and d.x_test['input'].shape == (20, 64)


def test_bilinear_resize_keeps_corners_and_constants():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out = resize_bilinear(img, (7, 7))
    assert out.shape == (1, 7, 7)
    assert out[0, 0, 0] == img[0, 0, 0] and out[0, -1, -1] == img[0, -1, -1]
    np.testing.assert_allclose(resize_bilinear(np.full((2, 3, 3), 5.0), (9, 9)), 5.0)


def test_npz_source_with_custom_keys(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, images=rng.random((50, 3, 8, 8)), labels=rng.integers(0, 3, 50))
    d = load_dataset(_cfg(source="npz", path=str(path), x_key="images", y_key="labels"), IOSpec.single([3, 8, 8]), seed=0)
    assert d.x_train['input'].shape == (40, 3, 8, 8) and d.num_classes == 3


def test_synthetic_source_is_learnable_noise_around_class_prototypes():
    d = load_dataset(_cfg(source="synthetic", num_samples=200, num_classes=4), IOSpec.single([16]), seed=0)
    assert d.x_train['input'].shape == (160, 16) and set(np.unique(d.y_train)) <= {0, 1, 2, 3}
    # nearest class mean separates the classes far above chance
    means = np.stack([d.x_train['input'][d.y_train == k].mean(0) for k in range(4)])
    pred = ((d.x_test['input'][:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == d.y_test).mean() > 0.8


def test_image_folder_source_reads_classes_from_subfolders(tmp_path):
    from PIL import Image

    for label, value in (("bright", 220), ("dark", 30)):
        (tmp_path / label).mkdir()
        for i in range(10):
            Image.new("RGB", (20, 12), (value + i, value, value)).save(tmp_path / label / f"{i}.png")
    (tmp_path / "bright" / "notes.txt").write_text("ignored")
    d = load_dataset(_cfg(source="image_folder", path=str(tmp_path)), IOSpec.single([1, 8, 8]), seed=0)
    assert d.x_train['input'].shape == (16, 1, 8, 8) and d.num_classes == 2
    labels = np.concatenate([d.y_train, d.y_test])
    means = np.concatenate([d.x_train['input'], d.x_test['input']]).mean(axis=(1, 2, 3))
    assert np.all(means[labels == 0] > 0.8) and np.all(means[labels == 1] < 0.2)  # "bright" sorts first
    rgb = load_dataset(_cfg(source="image_folder", path=str(tmp_path)), IOSpec.single([3, 6, 6]), seed=0)
    assert rgb.x_train['input'].shape == (16, 3, 6, 6)
