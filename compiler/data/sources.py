"""Loading, resizing and splitting of the built-in and user data sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Train/test arrays in the model's channels-first layout (x float32, y int64)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def calibration(self, size: int) -> np.ndarray:
        return self.x_train[:size]


def load_dataset(data_cfg: Any, input_shape: Sequence[int], seed: int) -> Dataset:
    """Build the recipe's data set; `input_shape` is the model's input without the batch dim."""
    input_shape = [int(d) for d in input_shape]  # a ListConfig does not slice from the end
    source = _name(data_cfg.source)
    if source == "digits":
        x, y = _digits(input_shape)
    elif source == "npz":
        x, y = _npz(data_cfg, input_shape)
    elif source == "image_folder":
        x, y = _image_folder(Path(data_cfg.path).expanduser(), input_shape)
    elif source == "synthetic":
        x, y = _synthetic(data_cfg, input_shape, seed)
    else:
        raise ValueError(f"unknown data source {source!r}")
    num_classes = data_cfg.num_classes if source == "synthetic" else int(y.max()) + 1
    return _split(x, y, data_cfg, seed, num_classes)


def _name(value: Any) -> str:
    return getattr(value, "value", value)


def _digits(input_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _digits_arrays()
    images = resize_bilinear(images / 16.0, tuple(input_shape[-2:]))  # (N, H, W) in [0, 1]
    if len(input_shape) == 2:  # sequences: one image row per step
        return np.ascontiguousarray(images, dtype=np.float32), labels
    channels = input_shape[0] if len(input_shape) == 3 else 1
    x = np.repeat(images[:, None], channels, axis=1)
    if len(input_shape) == 1:
        x = x.reshape(len(x), -1)
    return np.ascontiguousarray(x, dtype=np.float32), labels


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, read straight from the CSV it ships (importing its loader costs ~2 s)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",", dtype=np.float32)
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def _interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear interpolation weights mapping n_in samples onto n_out (end points aligned)."""
    positions = np.linspace(0.0, n_in - 1, n_out) if n_out > 1 else np.zeros(1)
    low = np.clip(np.floor(positions).astype(int), 0, max(n_in - 2, 0))
    frac = positions - low
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    weights[np.arange(n_out), low] = 1.0 - frac
    if n_in > 1:
        weights[np.arange(n_out), low + 1] += frac
    return weights


def resize_bilinear(images: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Bilinear resize of a (N, H, W) stack, as two small matrix products."""
    if len(size) != 2 or tuple(images.shape[1:]) == size:
        return images.astype(np.float32)
    rows = _interpolation_matrix(images.shape[1], size[0])
    cols = _interpolation_matrix(images.shape[2], size[1])
    return np.einsum("oh,nhw,pw->nop", rows, images.astype(np.float32), cols, optimize=True)


def _npz(data_cfg: Any, input_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    path = Path(data_cfg.path).expanduser()
    with np.load(path, allow_pickle=False) as arrays:
        x = arrays[data_cfg.x_key].astype(np.float32)
        y = arrays[data_cfg.y_key].astype(np.int64)
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{path}: '{data_cfg.x_key}' has sample shape {list(x.shape[1:])}, "
                         f"but model.input.shape is {list(input_shape)}")
    return x, y


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_folder_classes(folder: Path) -> list[Path]:
    """Class sub-folders that hold at least one image, in sorted (label) order."""
    return [d for d in sorted(folder.iterdir()) if d.is_dir()
            and any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir())]


def _image_folder(folder: Path, input_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Images resized to the input's height and width, grayscale for 1 channel else RGB, in [0, 1]."""
    from PIL import Image

    if len(input_shape) != 3:
        raise ValueError("image_folder data needs model.input.shape [channels, height, width]")
    channels, height, width = input_shape
    xs, ys = [], []
    for label, class_dir in enumerate(image_folder_classes(folder)):
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(file) as image:
                image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
                array = np.asarray(image, dtype=np.float32) / 255.0
            xs.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
            ys.append(label)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _synthetic(data_cfg: Any, input_shape: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable random data: each class is a noisy copy of its own random prototype."""
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((data_cfg.num_classes, *input_shape)).astype(np.float32)
    y = rng.integers(0, data_cfg.num_classes, data_cfg.num_samples).astype(np.int64)
    noise = rng.standard_normal((data_cfg.num_samples, *input_shape)).astype(np.float32)
    return prototypes[y] + noise, y


def _split(x: np.ndarray, y: np.ndarray, data_cfg: Any, seed: int, num_classes: int) -> Dataset:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    if data_cfg.limit:
        order = order[: data_cfg.limit]
    n_test = max(1, int(round(len(order) * data_cfg.test_fraction)))
    test, train = order[:n_test], order[n_test:]
    return Dataset(x[train], y[train], x[test], y[test], num_classes)
