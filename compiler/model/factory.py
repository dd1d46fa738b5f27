"""Instantiates a recipe's `_target_` config through Hydra, after re-checking what each target resolves to."""

from __future__ import annotations

from typing import Any

from compiler.errors import RecipeError
from compiler.security import target_problems


def instantiate_factory(factory_cfg: Any, key: str = "model.factory") -> Any:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(factory_cfg, resolve=True) if OmegaConf.is_config(factory_cfg) else factory_cfg
    bad = target_problems(container, key)
    if bad:
        raise RecipeError(bad)
    return instantiate(container, _convert_="all")
