"""Data sources: the recipe's `data` section and the arrays it yields.

Every source yields float32 images in the recipe's channels-first input shape and int64
labels, split deterministically by seed; the arrays are cheap enough to rebuild in any stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

__all__ = ["DataConfig", "DataSource"]  # loaders live in compiler.data.sources (imports numpy)


class DataSource(Enum):
    digits = "digits"        # scikit-learn's 8x8 handwritten digits, shipped with scikit-learn
    npz = "npz"              # the user's arrays in a .npz file
    image_folder = "image_folder"  # data.path/<class name>/*.png|jpg|jpeg, classes in sorted order
    synthetic = "synthetic"  # random inputs of the model's input shape, for architecture-only recipes
    none = "none"            # no data (framework onnx): verification on random inputs, no accuracy


@dataclass
class DataConfig:
    source: DataSource = DataSource.digits
    test_fraction: float = 0.2
    calibration_size: int = 256   # samples of the train split used to calibrate int8
    limit: Optional[int] = None   # keep at most this many samples (quick runs, tests)
    path: Optional[str] = None    # npz: the file
    x_key: str = "x"              # npz: the array of samples
    y_key: str = "y"              # npz: the array of integer labels
    num_classes: int = 10         # synthetic: label count
    num_samples: int = 1024       # synthetic: sample count
