"""Train stage: the recipe's `train` section, dispatched to the recipe's framework."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from compiler.frameworks import trainable
from compiler.stages import StageContext, StageResult


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class TrainPrecision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"   # autocast (torch)
    fp16 = "fp16"   # autocast + loss scaling (torch, CUDA only)


class OptimizerName(Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"
    rmsprop = "rmsprop"


class Loss(Enum):
    cross_entropy = "cross_entropy"


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adam
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    momentum: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 64
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    loss: Loss = Loss.cross_entropy
    device: Device = Device.auto
    precision: TrainPrecision = TrainPrecision.fp32
    progress: bool = True   # a progress bar per epoch with loss and accuracy
    # re-estimate BatchNorm running statistics over the training set after the last epoch: short
    # trainings (and Keras' 0.99-0.999 momenta) otherwise leave them far from the data's
    recompute_bn_stats: bool = True
    # data-parallel training (torch, DistributedDataParallel): processes on this node, 1, N or auto (every CUDA
    # GPU; 1 without one). Each step's batch of batch_size is split across all processes of all nodes.
    devices: Any = 1
    nnodes: int = 1                           # machines taking part; start the same recipe on each
    node_rank: int = 0                        # this machine's index, 0..nnodes-1
    rdzv_endpoint: str = "127.0.0.1:0"        # host:port of node 0's rendezvous; port 0: a free one (one node)


NOT_TRAINED = "not trained (data.source=none): the factory's weights as built"


def run(ctx: StageContext) -> StageResult:
    framework = trainable(ctx.cfg.framework.value)
    if ctx.cfg.data.source.value == "none":  # lint allows it for factory models only: nothing to train on
        artifact, info = framework.save_as_built(ctx.cfg, ctx.io, ctx.work_dir)
        return StageResult(artifact, {"trained": False, "note": NOT_TRAINED, "history": [], **info,
                                      "train_samples": 0, "test_samples": 0, "final_val_accuracy": None})
    return StageResult(*framework.train(ctx.cfg, ctx.io, ctx.work_dir, ctx.log))
