"""The checked recipe as the compile takes it."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from compiler.iospec import IOSpec
from compiler.plan import EnginePlan, resolve


@dataclass(frozen=True)
class Resolved:
    """A recipe after every check and edit: `cfg` is read-only (a later write raises), `io` is the run's one
    IOSpec and `plan` its one EnginePlan, both derived from `cfg` here and nowhere else; `domain` holds what the
    defaults and the input-domain probe of an ONNX file chose, for the report."""

    cfg: DictConfig
    io: IOSpec
    plan: EnginePlan
    domain: tuple[str, ...] = ()


def freeze(cfg: DictConfig, domain: list[str] | tuple[str, ...] = ()) -> Resolved:
    """Make the checked recipe read-only and derive the run's IOSpec and EnginePlan from it, once."""
    OmegaConf.set_readonly(cfg, True)
    return Resolved(cfg, IOSpec.from_cfg(cfg), resolve(cfg), tuple(domain))
