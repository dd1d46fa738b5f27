"""Training on the GPU: the compiler's torch loop vs the plain seed loop, and accuracy vs CPU.

In one run on one machine: the seed's plain DataLoader loop on CUDA (samples/s), then
`compiler recipe=cnn_torch train.device=cuda` in fp32 and bf16 autocast (samples/s from the
report), and the default 5-epoch compile on CUDA and on CPU (top-1 of framework and engine).
    python benchmarks/gpu_train.py [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compiler.data.sources import resize_bilinear, _digits_arrays  # noqa: E402


def plain_loop(epochs: int, device: str) -> float:
    """The seed's loop (DataLoader, same model, Adam 1e-3, batch 64); returns training samples/s."""
    torch.manual_seed(0)
    images, labels = _digits_arrays()
    x = torch.from_numpy(resize_bilinear(images / 16.0, (28, 28))[:, None])
    y = torch.from_numpy(labels)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(x)))
    x_train, y_train = x[order[360:]], y[order[360:]]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train), batch_size=64, shuffle=True)
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    torch.cuda.synchronize() if device == "cuda" else None
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
    torch.cuda.synchronize() if device == "cuda" else None
    return len(x_train) * epochs / (time.perf_counter() - start)


def compile_recipe(tmp: str, name: str, *overrides: str) -> dict:
    run_dir = Path(tmp) / name
    env = {**os.environ, "COMPILER_CACHE_DIR": f"{tmp}/cache-{name}"}
    subprocess.run([sys.executable, "-m", "compiler", "recipe=cnn_torch", *overrides, f"hydra.run.dir={run_dir}"],
                   env=env, check=True, capture_output=True)
    return json.loads((run_dir / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU: this benchmark needs one")
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    plain = plain_loop(args.epochs, "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for label, extra in (("compiler fp32", []), ("compiler bf16 autocast", ["train.precision=bf16"])):
            report = compile_recipe(tmp, label.replace(" ", "_"), "train.device=cuda", f"train.epochs={args.epochs}")
            if extra:
                report = compile_recipe(tmp, label.replace(" ", "_") + "x", "train.device=cuda",
                                        f"train.epochs={args.epochs}", *extra)
            rows.append((label, report["training"]["samples_per_second"], report["training"]["device"]))
        print(f"\n| training loop ({args.epochs} epochs, CUDA) | samples/s | vs plain loop |")
        print("|---|---|---|")
        print(f"| plain seed loop | {plain:.0f} | 1.00 |")
        for label, sps, device in rows:
            print(f"| {label} ({device}) | {sps:.0f} | {sps / plain:.2f} |")
        print("\n| default compile (5 epochs) | device | framework top-1 | engine top-1 | status |")
        print("|---|---|---|---|---|")
        for device in ("cuda", "cpu"):
            report = compile_recipe(tmp, f"default_{device}", f"train.device={device}")
            acc = report["metrics"]["accuracy"]
            print(f"| cnn_torch | {report['training']['device']} | {acc['framework']:.4f} | {acc['engine']:.4f} | "
                  f"{report['status']} |")


if __name__ == "__main__":
    main()
