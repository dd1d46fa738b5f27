"""Framework-native models that recipes can name as `model.factory._target_` (prefix `compiler.`)."""

from __future__ import annotations

from typing import Any


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


def causal_lm_with_cache(config: Any):
    """A transformers causal LM (built from `config`: no download) whose KV cache is flat tensors, the layout
    deployment runtimes feed: forward(input_ids, attention_mask, past_key_values.0.key, .0.value, ...) returns
    (logits, present.0.key, present.0.value, ...). attention_mask covers past + new tokens; an empty past
    (size 0 on its sequence axis) is the prefill step."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_config(config)
    layers = config.num_hidden_layers
    import inspect

    # transformers 5 names the argument `cache`; 4.x `past_key_values`
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    class CausalLMWithCache(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor):
            if len(past) != 2 * layers:
                raise ValueError(f"expected {2 * layers} past tensors (a key and a value per layer), got {len(past)}")
            cache = transformers.DynamicCache(config=config)
            for layer in range(layers):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **{cache_arg: cache})
            return (out.logits, *_flat_cache(cache))  # the model appended the new tokens' keys and values

    return CausalLMWithCache()


def _flat_cache(cache: Any) -> list:
    """A transformers DynamicCache as [key 0, value 0, key 1, ...] (its layout since 4.56, and before)."""
    if hasattr(cache, "layers"):
        return [t for layer in cache.layers for t in (layer.keys, layer.values)]
    return [t for pair in zip(cache.key_cache, cache.value_cache) for t in pair]
