"""The torch adapter: layer-list recipes and factory modules, trained on one device or data-parallel
(ddp.py), saved as a state dict (`model.pt`, loaded weights-only), exported by either torch exporter."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from compiler.frameworks.torch import ddp
from compiler.frameworks.torch.ddp import world_size

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec


class TorchAdapter:
    name = "torch"
    reference_is_file = False
    label = "torch recipes"
    packages: tuple[str, ...] = ()
    train_precisions = ("fp32", "fp16", "bf16")
    multi_process_training = True
    input_layouts = ("nchw",)                   # torch models take channels-first input
    exporter_packages = {"dynamo": "onnxscript"}

    def train(self, cfg: DictConfig, io: IOSpec, work_dir: Path, log: Any) -> tuple[str, dict]:
        if ddp.world_size(cfg.train) > 1:
            info = ddp.launch(cfg, io, work_dir)
            (work_dir / "train_info.json").unlink()
            return "model.pt", info
        import torch

        from compiler.frameworks.torch.fit import fit, resolve_device

        model, info = fit(cfg, io, resolve_device(cfg.train.device.value), log)
        torch.save(model.to("cpu").state_dict(), work_dir / "model.pt")
        return "model.pt", info

    def save_as_built(self, cfg: DictConfig, io: IOSpec, work_dir: Path) -> tuple[str, dict]:
        import torch

        from compiler.frameworks.torch.builder import build_torch_model

        torch.manual_seed(cfg.seed)
        model = build_torch_model(cfg.model, io).eval()
        torch.save(model.state_dict(), work_dir / "model.pt")
        return "model.pt", {"parameters": int(sum(p.numel() for p in model.parameters()))}

    def export(self, cfg: DictConfig, io: IOSpec, source: Path, out: Path, plan: Any) -> list[str]:
        from compiler.frameworks.torch.export import export

        export(cfg, io, source, out)
        return []

    def load(self, cfg: DictConfig, io: IOSpec, artifact: Path, gpu: bool) -> Any:
        from compiler.frameworks.torch.runtime import load_trained, reference_device

        return load_trained(cfg, io, artifact, device=reference_device(gpu))

    def predict(self, model: Any, feed: dict, io: IOSpec) -> dict:
        from compiler.frameworks.torch.runtime import predict

        return predict(model, feed)

    @contextlib.contextmanager
    def math_mode(self, tf32: bool) -> Iterator[None]:
        import torch

        matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        precision = torch.get_float32_matmul_precision()
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
            torch.set_float32_matmul_precision(precision)

    def world_size(self, train_cfg: Any) -> int:
        return world_size(train_cfg)


ADAPTER = TorchAdapter()
