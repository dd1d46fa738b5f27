"""Data sources: the recipe's `data` section and the arrays it yields.

Every source yields a dict of named input arrays (in the recipe's channels-first layout) and int64
labels, split deterministically by seed; the arrays are cheap enough to rebuild in any stage.
Image sources feed the model's one image input; npz keys map to inputs by name; `tokens` makes
a text task for models with integer token inputs.
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
    tokens = "tokens"        # a synthetic text task for token inputs (ids + attention mask), see sources._tokens
    none = "none"            # no data: random inputs, no accuracy (framework onnx, or a factory model untrained)


@dataclass
class DataConfig:
    source: DataSource = DataSource.digits
    test_fraction: float = 0.2
    calibration_size: int = 256   # samples of the train split used to calibrate int8
    limit: Optional[int] = None   # keep at most this many samples (quick runs, tests)
    path: Optional[str] = None    # npz: the file (arrays named after the inputs, or x_key for a single input)
    x_key: str = "x"              # npz: the array of samples of a single-input model
    y_key: str = "y"              # npz: the array of integer labels
    num_classes: int = 10         # synthetic: label count
    num_samples: int = 1024       # synthetic, tokens: sample count
    token_input: str = "input_ids"                  # tokens: the input that takes token ids
    mask_input: Optional[str] = "attention_mask"    # tokens: the input that takes the attention mask
