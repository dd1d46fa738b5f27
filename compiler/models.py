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
