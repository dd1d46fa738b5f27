"""PyTorch training loop: the seed's loop, plus device/precision choice, progress and history."""

from __future__ import annotations

from typing import TYPE_CHECKING

import contextlib
import math
import time

import numpy as np
import torch
from tqdm import tqdm

from compiler.data.sources import load_dataset
from compiler.errors import StageError
from compiler.frameworks.torch.builder import RecipeModule, build_torch_model
from compiler.iospec import IOSpec, label_output

if TYPE_CHECKING:
    from omegaconf import DictConfig

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
               "rmsprop": torch.optim.RMSprop}
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StageError("train", "train.device is 'cuda' but torch sees no CUDA GPU",
                         fix="use train.device=auto (or cpu), or install a CUDA build of torch on a GPU machine")
    return torch.device(name)


def _optimizer(params, opt_cfg) -> torch.optim.Optimizer:
    name = opt_cfg.name.value
    kwargs = {"lr": opt_cfg.lr, "weight_decay": opt_cfg.weight_decay}
    if name in ("sgd", "rmsprop"):
        kwargs["momentum"] = opt_cfg.momentum
    return _OPTIMIZERS[name](params, **kwargs)


def _tensors(x: dict, io: IOSpec, device: torch.device) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(x[t.name])).to(device) for t in io.inputs]


@torch.no_grad()
def accuracy(model: RecipeModule, xs: list[torch.Tensor], y: torch.Tensor, label: int, batch: int = 512) -> float:
    model.eval()
    correct = sum(int((model(*[x[i:i + batch] for x in xs])[label].argmax(1) == y[i:i + batch]).sum())
                  for i in range(0, len(y), batch))
    return correct / max(1, len(y))


@torch.no_grad()
def recompute_bn_stats(model: RecipeModule, xs: list[torch.Tensor], batch: int) -> bool:
    """torch's update_bn for models of any number of inputs: running stats as a plain average over one pass."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    rng = torch.get_rng_state()  # dropout in train mode draws numbers: keep the training run's own sequence
    model.train()
    for i in range(0, len(xs[0]), batch):
        model(*[x[i:i + batch] for x in xs])
    torch.set_rng_state(rng)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return True


def _global_sums(values: list[float], world: int, device: torch.device) -> list[float]:
    """Sums over every process (one process: the values themselves)."""
    if world == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def fit(cfg: DictConfig, io: IOSpec, device: torch.device, log, rank: int = 0,
        world: int = 1) -> tuple[RecipeModule, dict]:
    """The training loop. With world > 1 (ddp.py), this process takes every world-th sample of each step's
    batch and DistributedDataParallel averages the gradients: the step sees the same batch as one process."""
    tcfg = cfg.train
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.data, io, cfg.seed)
    model = build_torch_model(cfg.model, io).to(device)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                        find_unused_parameters=len(io.outputs) > 1)
    label = io.output_names.index(label_output(cfg, io))
    optimizer = _optimizer(model.parameters(), tcfg.optimizer)
    loss_fn = torch.nn.CrossEntropyLoss()
    precision = tcfg.precision.value
    if precision == "fp16" and device.type != "cuda":
        raise StageError("train", "train.precision=fp16 needs a CUDA device", fix="use train.precision=bf16 on CPU")
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    x_train, x_test = _tensors(data.x_train, io, device), _tensors(data.x_test, io, device)
    y_train = torch.from_numpy(data.y_train).to(device)
    y_test = torch.from_numpy(data.y_test).to(device)
    generator = torch.Generator().manual_seed(cfg.seed)  # the same order on every process
    # BatchNorm running stats lag far behind a short training: every epoch's test accuracy is measured as the final
    # model's is, with the stats re-estimated over the training set (batch statistics drive training itself)
    bn = tcfg.recompute_bn_stats and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    history: list[dict] = []
    seconds = 0.0  # in training steps only: the per-epoch evaluation is not training throughput
    for epoch in range(1, tcfg.epochs + 1):
        started = time.perf_counter()
        net.train()
        order = torch.randperm(len(y_train), generator=generator).to(device)
        batches = [s for s in range(0, len(order), tcfg.batch_size) if len(order[s:s + tcfg.batch_size]) >= world]
        bar = tqdm(batches, desc=f"epoch {epoch}/{tcfg.epochs}", unit="batch", leave=False,
                   disable=None if tcfg.progress and rank == 0 else True, dynamic_ncols=True)  # None: a terminal only
        total_loss, correct, seen = 0.0, 0, 0
        for start in bar:
            idx = order[start:start + tcfg.batch_size][rank::world]
            yb = y_train[idx]
            autocast = (torch.autocast(device.type, dtype=_AUTOCAST[precision]) if precision in _AUTOCAST
                        else contextlib.nullcontext())
            with autocast:
                logits = net(*[x[idx] for x in x_train])[label]
                loss = loss_fn(logits.float(), yb)
            if not math.isfinite(loss.item()):
                raise StageError("train", f"the loss became {loss.item()} at epoch {epoch}, batch {start // tcfg.batch_size}",
                                 fix="lower train.optimizer.lr, check the data for NaN/inf, or use train.precision=fp32")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - started
        total_loss, correct, seen = _global_sums([total_loss, correct, seen], world, device)
        if bn:
            recompute_bn_stats(model, x_train, tcfg.batch_size)  # the same on every process: the same stats
        val = accuracy(model, x_test, y_test, label)
        history.append({"epoch": epoch, "loss": total_loss / seen, "accuracy": correct / seen, "val_accuracy": val,
                        "bn_stats": "re-estimated" if bn else "running"})
        bar.close()
        if rank == 0:
            log.info("epoch %d/%d  loss %.4f  accuracy %.4f  test accuracy %.4f", epoch, tcfg.epochs,
                     total_loss / seen, correct / seen, val)
    samples = len(y_train) * tcfg.epochs
    return model, {
        "history": history, "device": str(device) if world == 1 else f"{world} x {device.type} (DDP)",
        "processes": world, "precision": precision,
        "train_samples": len(y_train), "test_samples": len(y_test), "label_output": io.output_names[label],
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "samples_per_second": samples / seconds if seconds > 0 else None,  # all processes together
        "train_seconds": seconds,
        "final_val_accuracy": history[-1]["val_accuracy"] if history else None,
    }
