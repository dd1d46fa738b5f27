"""The typed recipe: one dataclass per stage, owned by the module that consumes it, assembled here.

Registered in Hydra's ConfigStore as `schema/compiler`, which conf/config.yaml lists first, so
unknown keys, wrong types and bad enum values fail at composition with their full key path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hydra.core.config_store import ConfigStore

from compiler.backends import EngineConfig
from compiler.cache import CacheConfig
from compiler.data import DataConfig
from compiler.model import ModelConfig
from compiler.serve import ServeConfig
from compiler.stages.export import ExportConfig
from compiler.stages.quantize import QuantizeConfig
from compiler.stages.surgery import SurgeryConfig
from compiler.stages.train import TrainConfig
from compiler.stages.verify import VerifyConfig
from compiler.tracking import TrackingConfig


class Framework(Enum):
    torch = "torch"
    tensorflow = "tensorflow"
    onnx = "onnx"   # start from an existing ONNX file (model.path): no training, no export


class Mode(Enum):
    compile = "compile"   # lint, then every stage
    lint = "lint"         # lint only: no heavy import, nothing written
    list = "list"         # list recipes, passes, precisions, backends, providers (cli.py, discovery.py)


@dataclass
class RecipeConfig:
    framework: Framework = Framework.torch
    seed: int = 0
    mode: Mode = Mode.compile
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    surgery: SurgeryConfig = field(default_factory=SurgeryConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


SCHEMA_GROUP = "schema"


def register() -> None:
    ConfigStore.instance().store(group=SCHEMA_GROUP, name="compiler", node=RecipeConfig, package="_global_")
