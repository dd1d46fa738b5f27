"""Data-parallel training for torch recipes: one process per device, DistributedDataParallel, gloo on CPU
and NCCL on GPUs. The train stage calls `launch`; every process runs the same loop (fit.py) on its
shard of each step's batch, and rank 0 writes the one `model.pt`.

Launched from the train stage itself (torch.multiprocessing, spawn), so a recipe needs no `torchrun`; on
several machines, start the same recipe on each with train.nnodes, train.node_rank and train.rdzv_endpoint.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec


def gpu_count() -> int:
    """CUDA GPUs, without importing torch: nvidia-smi's list (0 without a driver)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def local_devices(train_cfg: Any) -> int:
    """Processes on this node: train.devices, with auto = every CUDA GPU (1 without one)."""
    devices = train_cfg.devices
    return max(1, gpu_count()) if devices == "auto" else int(devices)


def world_size(train_cfg: Any) -> int:
    """Processes in all: what the training result depends on (it enters the train stage's cache key)."""
    return local_devices(train_cfg) * int(train_cfg.nnodes)


def _endpoint(train_cfg: Any) -> tuple[str, int]:
    host, _, port = train_cfg.rdzv_endpoint.rpartition(":")
    port = int(port)
    if port == 0:  # one node: any free port on this machine
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    return host, port


def launch(cfg: DictConfig, io: IOSpec, work_dir: Path) -> dict:
    """Train with world_size(cfg.train) processes; return rank 0's info (the model is in work_dir)."""
    import torch.multiprocessing as mp

    devices = local_devices(cfg.train)
    host, port = _endpoint(cfg.train)
    mp.start_processes(_worker, args=(cfg, io, str(work_dir), host, port, devices), nprocs=devices,
                       start_method="spawn", join=True)
    return json.loads((work_dir / "train_info.json").read_text())


def _worker(local_rank: int, cfg: DictConfig, io: IOSpec, work_dir: str, host: str, port: int, devices: int) -> None:
    import logging

    import torch
    import torch.distributed as dist

    from compiler.frameworks.torch.fit import fit

    world = devices * int(cfg.train.nnodes)
    rank = int(cfg.train.node_rank) * devices + local_rank
    cuda = torch.cuda.is_available() and cfg.train.device.value != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    else:  # processes share this machine's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // devices))
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://{host}:{port}", rank=rank,
                            world_size=world)
    try:
        device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
        model, info = fit(cfg, io, device, logging.getLogger("compiler"), rank=rank, world=world)
        if rank == 0:
            torch.save(model.to("cpu").state_dict(), Path(work_dir) / "model.pt")
            (Path(work_dir) / "train_info.json").write_text(json.dumps(info))
        dist.barrier()
    finally:
        dist.destroy_process_group()
