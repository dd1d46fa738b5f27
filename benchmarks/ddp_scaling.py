"""Data-parallel training speed-up: the same recipe trained on 1 and on N devices in one run.

    python benchmarks/ddp_scaling.py [--devices 2] [--recipe resnet_torch] [-- OVERRIDES...]

Each configuration is a full `python -m compiler` compile with `train.devices=1` and `train.devices=N`;
the table gives the training throughput from each report (samples/s over the training loop, all processes
together) and the top-1 of the trained model. The default overrides enlarge `resnet_torch` (128x128 inputs,
wider layers, a batch of 512) until one step's compute pays for the gradient all-reduce.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ENLARGED = ["model.inputs=[{name: input, shape: [batch, 1, 128, 128]}]",
            "model.layers.0.conv2d.filters=64", "model.layers.3.residual.filters=64",
            "model.layers.4.residual.filters=128", "train.batch_size=512", "train.epochs=40",
            "train.optimizer.lr=3e-3", "verify.latency.batch_sizes=[1]", "verify.samples=16"]


def compile_once(recipe: str, devices: int, overrides: list[str], folder: Path) -> dict:
    run_dir = folder / f"devices{devices}"
    env = {**os.environ, "COMPILER_CACHE_DIR": str(folder / f"cache{devices}")}
    proc = subprocess.run([sys.executable, "-m", "compiler", f"recipe={recipe}", f"train.devices={devices}",
                           *overrides, f"hydra.run.dir={run_dir}"], env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 3):  # 3: a gate failed; the training figures are still there
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return json.loads((run_dir / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--recipe", default="resnet_torch")
    parser.add_argument("overrides", nargs="*", default=ENLARGED)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for devices in (1, args.devices):
            report = compile_once(args.recipe, devices, args.overrides, Path(tmp))
            t = report["training"]
            rows.append((devices, t["device"], t["samples_per_second"], report["metrics"]["accuracy"]["framework"],
                         report["metrics"]["accuracy"].get("engine")))
            print(json.dumps({"devices": devices, "training": {k: t[k] for k in ("device", "samples_per_second",
                                                                                 "final_val_accuracy")}}), flush=True)
    base = rows[0][2]
    print(f"\n{args.recipe} with {' '.join(args.overrides)}\n")
    print("| devices | device | samples/s | speed-up | top-1 (framework) | top-1 (engine) |")
    print("|---|---|---|---|---|---|")
    for devices, device, rate, acc, engine in rows:
        print(f"| {devices} | {device} | {rate:.0f} | {rate / base:.2f} | {acc:.4f} | {engine if engine is None else f'{engine:.4f}'} |")
    print(f"\ntop-1 difference: {(rows[1][3] - rows[0][3]) * 100:+.2f} points")


if __name__ == "__main__":
    main()
