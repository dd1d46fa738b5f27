"""INT8 vs FP32 onnxruntime engines of the same recipe: accuracy and batch-32 throughput, one run.

    python benchmarks/int8_throughput.py [--recipes cnn_torch cnn_tf] [--iterations 300] [--threads 2 0]

Each engine is loaded the way its report says (threads, disabled transformers). To measure on another
machine (the deployment CPU), compile here with `--save DIR`, copy DIR, and run `--measure DIR` there:
the measuring side needs only onnxruntime and numpy.
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
from _timing import machine_line, session_run_ms

PRECISIONS = ("fp32", "int8")


def compile_recipe(recipe: str, precision: str, out: Path, cache: Path) -> None:
    env = {**os.environ, "COMPILER_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-m", "compiler", f"recipe={recipe}", f"engine.precision={precision}",
                    f"hydra.run.dir={out / f'{recipe}-{precision}'}"], env=env, check=True, capture_output=True)


def engine_session(run_dir: Path, report: dict, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(run_dir / report["stages"]["build"]["artifact"]), options,
                                providers=["CPUExecutionProvider"],
                                disabled_optimizers=report["engine"].get("disabled_optimizers") or [])


def measure(folder: Path, recipe: str, threads: int, iterations: int) -> str:
    runs = {p: folder / f"{recipe}-{p}" for p in PRECISIONS}
    reports = {p: json.loads((d / "report.json").read_text()) for p, d in runs.items()}
    sessions = {p: engine_session(d, reports[p], threads) for p, d in runs.items()}
    inputs = sessions["fp32"].get_inputs()[0]
    shape = [d if isinstance(d, int) else 32 for d in inputs.shape]
    feed = {inputs.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    rates: dict[str, list[float]] = {p: [] for p in sessions}
    for _ in range(5):  # interleaved rounds, so drifts of the machine hit both engines alike
        for p, s in sessions.items():
            rates[p] += [32e3 / ms for ms in session_run_ms(s, feed, iterations // 5)]
    fp32, int8 = (statistics.median(rates[p]) for p in PRECISIONS)
    a32, a8 = (reports[p]["metrics"]["accuracy"]["engine"] for p in PRECISIONS)
    q = reports["int8"]["quantize"]
    kept = ", ".join(q["kept_fp32"] + q.get("kept_fp32_shallow", [])) or "-"
    return (f"| {recipe} | {threads or 'default'} | {a32:.4f} | {a8:.4f} | {(a32 - a8) * 100:.2f} | {kept} | "
            f"{fp32:.0f} | {int8:.0f} | {int8 / fp32:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["cnn_torch", "cnn_tf"])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--threads", nargs="+", type=int, default=[0], help="intra-op threads; 0: onnxruntime's default")
    parser.add_argument("--save", type=Path, help="compile into this folder and keep it")
    parser.add_argument("--measure", type=Path, help="only measure engines compiled earlier with --save")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.measure or args.save or Path(tmp)
        if not args.measure:
            for recipe in args.recipes:
                for precision in PRECISIONS:
                    compile_recipe(recipe, precision, folder, Path(tmp) / "cache")
        print(machine_line())
        print("| recipe | threads | fp32 top-1 | int8 top-1 | drop (points) | kept fp32 | fp32 samples/s (b32) "
              "| int8 samples/s (b32) | int8 / fp32 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for recipe in args.recipes:
            for threads in args.threads:
                print(measure(folder, recipe, threads, args.iterations), flush=True)


if __name__ == "__main__":
    main()
