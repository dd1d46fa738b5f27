"""Loading, resizing and splitting of the built-in and user data sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from compiler.iospec import random_array

if TYPE_CHECKING:
    from compiler.iospec import IOSpec


@dataclass(frozen=True)
class Dataset:
    """Train/test inputs by name, in the recipe's channels-first layout, and int64 labels (None: an unlabelled
    npz of an ONNX recipe, whose inputs drive verification, latency and calibration only)."""

    x_train: dict[str, np.ndarray]
    y_train: np.ndarray | None
    x_test: dict[str, np.ndarray]
    y_test: np.ndarray | None
    num_classes: int

    def calibration(self, size: int) -> dict[str, np.ndarray]:
        return {k: v[:size] for k, v in self.x_train.items()}


def load_dataset(data_cfg: Any, io: IOSpec, seed: int) -> Dataset:
    """Build the recipe's data set for the resolved IO spec (`compiler.iospec.IOSpec`)."""
    source = _name(data_cfg.source)
    if source == "tokens":
        x, y = _tokens(data_cfg, io, seed)
    elif source == "synthetic":
        x, y = _synthetic(data_cfg, io, seed)
    elif source == "npz":
        x, y = _npz(data_cfg, io)
    else:
        image = io.inputs[0]
        sample = list(image.data_shape(io.shapes(0, "opt")[image.name]))[1:]
        if source == "digits":
            arrays, y = _digits(sample)
        elif source == "image_folder":
            arrays, y = _image_folder(Path(data_cfg.path).expanduser(), sample)
        else:
            raise ValueError(f"unknown data source {source!r}")
        x = {image.name: arrays.astype(image.dtype) if image.dtype == "float16" else arrays}
    num_classes = data_cfg.num_classes if source in ("synthetic", "tokens") else (int(y.max()) + 1 if y is not None
                                                                                  else 0)
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


def _npz(data_cfg: Any, io: IOSpec) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Arrays named after the model's inputs; a single-input model may use `x_key` instead."""
    path = Path(data_cfg.path).expanduser()
    shapes = io.shapes(0, "opt")
    with np.load(path, allow_pickle=False) as arrays:
        x = {}
        for t in io.inputs:
            key = t.name if t.name in arrays.files or len(io.inputs) > 1 else data_cfg.x_key
            value = arrays[key]
            x[t.name] = value.astype(np.float32) if value.dtype.kind == "f" and t.dtype == "float32" else value
            expected = t.data_shape(shapes[t.name])[1:]
            fixed = [d for d, s in zip(t.data_shape(t.shape)[1:], value.shape[1:]) if isinstance(d, int) and d != s]
            if value.ndim != len(expected) + 1 or fixed:
                raise ValueError(f"{path}: '{key}' has sample shape {list(value.shape[1:])}, but input '{t.name}' "
                                 f"takes {list(t.data_shape(t.shape)[1:])}")
        y = arrays[data_cfg.y_key].astype(np.int64) if data_cfg.y_key in arrays.files else None  # inputs only
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
        raise ValueError("image_folder data needs an image input [batch, channels, height, width]")
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


def _synthetic(data_cfg: Any, io: IOSpec, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Learnable random data for every input: each class is a noisy copy of its own random prototype
    (integer inputs: random values within their range, carrying no label)."""
    rng = np.random.default_rng(seed)
    n, classes = data_cfg.num_samples, data_cfg.num_classes
    y = rng.integers(0, classes, n).astype(np.int64)
    shapes = io.shapes(0, "opt", batch=n)
    x = {}
    for t in io.inputs:
        shape = t.data_shape(shapes[t.name])
        if t.is_int:
            x[t.name] = random_array(rng, t, shape, io.dim_sizes(shapes))
            continue
        prototypes = rng.standard_normal((classes, *shape[1:])).astype(np.float32)
        x[t.name] = (prototypes[y] + rng.standard_normal(shape).astype(np.float32)).astype(t.dtype)
    return x, y


def _tokens(data_cfg: Any, io: IOSpec, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A text task whose answer only the unmasked tokens hold.

    Token t belongs to group t % classes; the label is the most frequent group among the real
    (mask 1) tokens, ties to the lowest. Real lengths vary up to half the sequence, and the
    padding after them is drawn from another group, so a model that ignores the attention mask
    reads the padding's majority and fails. Other inputs (token types, positions) are zeros.
    """
    rng = np.random.default_rng(seed)
    ids = io.input(data_cfg.token_input)
    n, classes = data_cfg.num_samples, data_cfg.num_classes
    seq = io.shapes(0, "opt")[ids.name][1]
    low, high = (int(v) for v in ids.range)
    vocab = np.arange(low, high)
    groups = [vocab[vocab % classes == g] for g in range(classes)]
    lengths = rng.integers(max(2, seq // 8), max(3, seq // 2 + 1), n)
    intended = rng.integers(0, classes, n)
    tokens = np.empty((n, seq), dtype=np.int64)
    mask = np.zeros((n, seq), dtype=np.int64)
    for i in range(n):
        own = rng.random(seq) < 0.8
        real = np.where(own, rng.choice(groups[intended[i]], seq), rng.choice(vocab, seq))
        pad = rng.choice(groups[(intended[i] + 1) % classes], seq)
        tokens[i] = np.where(np.arange(seq) < lengths[i], real, pad)
        mask[i, : lengths[i]] = 1
    counts = np.stack([((tokens % classes == g) & (mask == 1)).sum(1) for g in range(classes)], 1)
    y = counts.argmax(1).astype(np.int64)
    x = {}
    for t in io.inputs:
        if t.name == ids.name:
            x[t.name] = tokens.astype(t.dtype)
        elif t.name == data_cfg.mask_input:
            x[t.name] = mask.astype(t.dtype)
        else:
            x[t.name] = np.zeros((n, *t.data_shape(io.shapes(0, "opt")[t.name])[1:]), dtype=t.dtype)
    return x, y


def _split(x: dict[str, np.ndarray], y: np.ndarray | None, data_cfg: Any, seed: int, num_classes: int) -> Dataset:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y) if y is not None else len(next(iter(x.values()))))
    if data_cfg.limit:
        order = order[: data_cfg.limit]
    n_test = max(1, int(round(len(order) * data_cfg.test_fraction)))
    test, train = order[:n_test], order[n_test:]
    return Dataset({k: v[train] for k, v in x.items()}, None if y is None else y[train],
                   {k: v[test] for k, v in x.items()}, None if y is None else y[test], num_classes)
