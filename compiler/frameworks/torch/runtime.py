"""A trained torch model at inference: rebuilt from its recipe and weights, on the reference's device, fed
named numpy arrays (or device tensors, for GPU latency)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from compiler.frameworks.torch.builder import RecipeModule, build_torch_model
from compiler.iospec import IOSpec

if TYPE_CHECKING:
    from omegaconf import DictConfig


def load_trained(cfg: DictConfig, io: IOSpec, path, device: str | torch.device = "cpu") -> RecipeModule:
    """Rebuild the recipe's module and load its trained weights (weights_only: no pickled code)."""
    model = build_torch_model(cfg.model, io)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().to(device)


def reference_device(gpu: bool) -> torch.device:
    """Where the framework reference runs: on the GPU when the engine does and torch sees one, else the CPU."""
    return torch.device("cuda") if gpu and torch.cuda.is_available() else torch.device("cpu")


def model_device(model: torch.nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


def predict(model: RecipeModule, feed: dict) -> dict[str, np.ndarray]:
    """Outputs by name for a feed of named numpy inputs (or torch tensors already on the model's device)."""
    device = model_device(model)
    with torch.no_grad():
        outputs = model(*[_on(feed[name], device) for name in model.input_names])
    return {name: out.detach().cpu().numpy() for name, out in zip(model.output_names, outputs)}


def predict_on_device(model: RecipeModule, feed: dict) -> list:
    """The outputs as device tensors, for latency: nothing is copied back to the host."""
    with torch.no_grad():
        return list(model(*[feed[name] for name in model.input_names]))


def _on(x, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)
