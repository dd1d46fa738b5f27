"""INT8 vs FP32 onnxruntime engines of the same recipe: accuracy and batch-32 throughput, one run.

    python benchmarks/int8_throughput.py [--recipes cnn_torch cnn_tf] [--iterations 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from _timing import session_run_ms


def compile_recipe(recipe: str, precision: str, tmp: str) -> Path:
    run_dir = Path(tmp) / f"{recipe}-{precision}"
    env = {**os.environ, "COMPILER_CACHE_DIR": f"{tmp}/cache", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-m", "compiler", f"recipe={recipe}", f"engine.precision={precision}",
                    f"hydra.run.dir={run_dir}"], env=env, check=True, capture_output=True)
    return run_dir


def throughput(session: ort.InferenceSession, feed: dict, iterations: int) -> list[float]:
    return [32e3 / ms for ms in session_run_ms(session, feed, iterations)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["cnn_torch", "cnn_tf"])
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    print("| recipe | fp32 top-1 | int8 top-1 | drop (points) | kept fp32 | fp32 samples/s (b32) | int8 samples/s (b32) | int8 / fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            runs = {p: compile_recipe(recipe, p, tmp) for p in ("fp32", "int8")}
            reports = {p: json.loads((d / "report.json").read_text()) for p, d in runs.items()}
            sessions = {p: ort.InferenceSession(str(d / reports[p]["stages"]["build"]["artifact"]),
                                                providers=["CPUExecutionProvider"]) for p, d in runs.items()}
            name = sessions["fp32"].get_inputs()[0].name
            shape = [d if isinstance(d, int) else 32 for d in sessions["fp32"].get_inputs()[0].shape]
            feed = {name: np.random.default_rng(0).random(shape, dtype=np.float32)}
            rates = {p: [] for p in sessions}
            for _ in range(5):  # interleaved rounds
                for p, s in sessions.items():
                    rates[p] += throughput(s, feed, args.iterations // 5)
            fp32, int8 = (statistics.median(rates[p]) for p in ("fp32", "int8"))
            a32 = reports["fp32"]["metrics"]["accuracy"]["engine"]
            a8 = reports["int8"]["metrics"]["accuracy"]["engine"]
            kept = ", ".join(reports["int8"]["quantize"]["kept_fp32"]) or "-"
            print(f"| {recipe} | {a32:.4f} | {a8:.4f} | {(a32 - a8) * 100:.2f} | {kept} | {fp32:.0f} | {int8:.0f} | "
                  f"{int8 / fp32:.2f} |")


if __name__ == "__main__":
    main()
