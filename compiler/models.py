"""Framework-native models that recipes can name as `model.factory._target_` (prefix `compiler.`)."""

from __future__ import annotations


def sequence_classifier(features: int, classes: int, d_model: int = 64, heads: int = 4, layers: int = 2,
                        feedforward: int = 128, dropout: float = 0.1, max_length: int = 64):
    """A torch.nn.TransformerEncoder classifier over (batch, length, features) sequences."""
    import torch
    from torch import nn

    class SequenceClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(features, d_model)
            self.position = nn.Parameter(torch.zeros(1, max_length, d_model))
            layer = nn.TransformerEncoderLayer(d_model, heads, feedforward, dropout, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Linear(d_model, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x) + self.position[:, : x.shape[1]]
            return self.head(self.encoder(h).mean(dim=1))

    return SequenceClassifier()


def two_head_classifier(channels: int = 1, size: int = 16, classes: int = 10, width: int = 16,
                        regression_outputs: int = 4):
    """A small CNN with two heads: class logits, and a regression head over the same features.

    Only the head named by `model.label_output` is trained; the regression head is verified like any
    output (its own row and tolerance in the ledger).
    """
    from torch import nn

    class TwoHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Sequential(
                nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
            features = 2 * width * (size // 4) ** 2
            self.classes = nn.Linear(features, classes)
            self.regression = nn.Linear(features, regression_outputs)

        def forward(self, x):
            features = self.trunk(x)
            return self.classes(features), self.regression(features)

    return TwoHead()


def keras_two_input(image_shape: list, features: int, classes: int = 10, width: int = 16,
                    image_name: str = "image", features_name: str = "features"):
    """A Keras functional model over two inputs: a channels-last image and a feature vector."""
    import keras

    image = keras.Input(tuple(image_shape), name=image_name)
    extra = keras.Input((features,), name=features_name)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Concatenate()([x, keras.layers.Dense(width, activation="relu")(extra)])
    return keras.Model([image, extra], keras.layers.Dense(classes)(x))
