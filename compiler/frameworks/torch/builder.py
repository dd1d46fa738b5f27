"""Builds a torch.nn.Module from the layer list (or an allow-listed factory)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from compiler.model.factory import instantiate_factory
from compiler.model.layers import LayerSpec, activation_of, pair, parse_layers

if TYPE_CHECKING:
    from compiler.iospec import IOSpec

_ACTIVATIONS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
    "silu": nn.SiLU, "elu": nn.ELU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "softmax": lambda: nn.Softmax(dim=-1),
}


class ResidualBlock(nn.Module):
    """Two 3x3 conv+BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, filters: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, filters, 3, stride, 1, bias=False), nn.BatchNorm2d(filters), nn.ReLU(),
            nn.Conv2d(filters, filters, 3, 1, 1, bias=False), nn.BatchNorm2d(filters),
        )
        needs_projection = stride != 1 or in_channels != filters
        self.shortcut = (nn.Sequential(nn.Conv2d(in_channels, filters, 1, stride, bias=False), nn.BatchNorm2d(filters))
                         if needs_projection else nn.Identity())
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def _padding(args: dict[str, Any]) -> int | tuple[int, int]:
    if args["padding"] == "same":
        kh, kw = pair(args["kernel"])
        return (kh // 2, kw // 2)
    return 0 if args["padding"] == "valid" else int(args["padding"])


def _layer(spec: LayerSpec) -> list[nn.Module]:
    a, c_in = spec.args, spec.in_shape[0]
    if spec.type == "conv2d":
        core = nn.Conv2d(c_in, a["filters"], pair(a["kernel"]), a["stride"], _padding(a))
    elif spec.type == "depthwise_conv2d":
        core = nn.Conv2d(c_in, c_in * a["multiplier"], pair(a["kernel"]), a["stride"], _padding(a), groups=c_in)
    elif spec.type in ("maxpool2d", "avgpool2d"):
        pool = nn.MaxPool2d if spec.type == "maxpool2d" else nn.AvgPool2d
        core = pool(pair(a["size"]), a["stride"] or pair(a["size"])[0])
    elif spec.type == "global_avg_pool":
        core = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    elif spec.type == "batchnorm":
        bn = nn.BatchNorm2d if len(spec.in_shape) == 3 else nn.BatchNorm1d
        core = bn(c_in, eps=a["eps"], momentum=1.0 - a["momentum"])  # Keras' momentum convention
    elif spec.type == "dropout":
        core = nn.Dropout(a["rate"])
    elif spec.type == "flatten":
        core = nn.Flatten()
    elif spec.type == "dense":
        core = nn.Linear(c_in, a["units"])
    elif spec.type == "residual":
        core = ResidualBlock(c_in, a["filters"], a["stride"])
    elif spec.type == "activation":
        core = None
    else:
        raise AssertionError(f"no torch builder for layer type {spec.type!r}")
    modules = [core] if core is not None else []
    act = activation_of(spec)
    if act:
        modules.append(_ACTIVATIONS[act]())
    return modules


def build_sequential(specs: Sequence[LayerSpec]) -> nn.Sequential:
    return nn.Sequential(*[m for spec in specs for m in _layer(spec)])


class RecipeModule(nn.Module):
    """The recipe's model seen through its IO spec: inputs by position in `model.inputs` order, and a tuple
    of the listed outputs, whatever the inner module returns (a tensor, a tuple, a dict, a ModelOutput)."""

    def __init__(self, inner: nn.Module, inputs: Sequence[str], outputs: Sequence[str]):
        super().__init__()
        self.inner = inner
        self.input_names, self.output_names = list(inputs), list(outputs)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.inner(*inputs)
        if isinstance(result, torch.Tensor):
            items = [result]
        elif hasattr(result, "to_tuple"):  # transformers' ModelOutput
            items = list(result.to_tuple())
        elif isinstance(result, dict):
            items = list(result.values())
        else:
            items = list(result)
        tensors = [t for t in items if isinstance(t, torch.Tensor)]
        if len(tensors) < len(self.output_names):
            raise ValueError(f"the model returns {len(tensors)} tensor(s), but model.outputs lists "
                             f"{len(self.output_names)}: {', '.join(self.output_names)}")
        return tuple(tensors[: len(self.output_names)])


def build_torch_model(model_cfg: Any, io: IOSpec) -> RecipeModule:
    """The recipe's model as torch.nn (the layer list, or the allow-listed factory), called by the IO spec."""
    if model_cfg.factory is not None:
        inner = instantiate_factory(model_cfg.factory)
    else:
        specs, problems = parse_layers(model_cfg.layers, list(io.inputs[0].shape[1:]))
        assert not problems, problems  # lint has already reported these
        inner = build_sequential(specs)
    return RecipeModule(inner, io.input_names, io.output_names)
