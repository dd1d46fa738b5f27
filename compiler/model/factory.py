"""Instantiates `model.factory` through Hydra, after re-checking the allow-list."""

from __future__ import annotations

from typing import Any

from compiler.errors import Problem, RecipeError
from compiler.security import allowed_prefixes, is_allowed, targets_in


def instantiate_factory(factory_cfg: Any, key: str = "model.factory") -> Any:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(factory_cfg, resolve=True) if OmegaConf.is_config(factory_cfg) else factory_cfg
    bad = [Problem(path, "target is not on the allow-list", target, ", ".join(allowed_prefixes()))
           for path, target in targets_in(container, key) if not is_allowed(target)]
    if bad:
        raise RecipeError(bad)
    return instantiate(container, _convert_="all")
