"""The stage contract and the pipeline's stage list.

A stage reads its slice of the recipe and earlier stages' artifacts from disk, and writes
one artifact into `ctx.work_dir`. Its runner is named by import path, so that looking at
the stage list (lint, cache look-ups) imports nothing heavy.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from omegaconf import DictConfig

if TYPE_CHECKING:
    from compiler.plan import EnginePlan


@dataclass
class StageContext:
    cfg: DictConfig                 # only the recipe sections this stage's cache key holds (others raise)
    work_dir: Path                  # where this stage writes its artifact
    inputs: dict[str, Path]         # artifacts of the stages it needs, by stage name
    input_info: dict[str, dict]     # the `info` of the stages it needs (and of no other), by stage name
    log: logging.Logger
    io: Any = None                  # the resolved IO spec (compiler.iospec.IOSpec)
    plan: Any = None                # the resolved EnginePlan (compiler.plan.EnginePlan)
    recipe: str = "model"           # the recipe's name (the serving model's default name)


@dataclass
class StageResult:
    artifact: str                   # file name inside work_dir
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able facts for the report


@dataclass(frozen=True)
class Stage:
    name: str
    runner: str                     # "module:function" taking a StageContext
    config_keys: tuple[str, ...]    # recipe sections that enter this stage's cache key
    needs: tuple[str, ...] = ()     # earlier stages whose artifacts it reads
    tools: tuple[str, ...] = ()     # distributions whose versions enter its cache key
    plan_key: str | None = None     # the EnginePlan method giving what this stage reads of the plan
    calibrating_keys: tuple[str, ...] = ()  # further sections it reads when the plan calibrates at build
    cached: bool = True             # False: run every time (latency), outside the work lock

    def sections(self, plan: EnginePlan) -> tuple[str, ...]:
        """The recipe sections this stage reads, which are exactly those its key holds."""
        return self.config_keys + (self.calibrating_keys if plan.calibrator else ())

    def load(self) -> Callable[[StageContext], StageResult]:
        module, _, func = self.runner.partition(":")
        return getattr(importlib.import_module(module), func)
