"""The compiler's onnxruntime engine vs a plain onnxruntime session on the unmodified export.

Compiles `cnn_torch` (or the recipe given), then times, in one process and interleaved rounds,
`session.run` on (a) model.onnx with onnxruntime's defaults, as a user would load it, and
(b) the compiler's engine (model.opt.onnx), at batch 1 and 32. Prints medians and ratios.
    python benchmarks/engine_latency.py [--recipe cnn_torch] [--iterations 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from _timing import session_run_ms as _time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="cnn_torch")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        env = {**os.environ, "COMPILER_CACHE_DIR": f"{tmp}/cache"}
        subprocess.run([sys.executable, "-m", "compiler", f"recipe={args.recipe}", f"hydra.run.dir={run_dir}"],
                       env=env, check=True, capture_output=True)
        plain = ort.InferenceSession(str(run_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        engine = ort.InferenceSession(str(run_dir / "model.opt.onnx"), providers=["CPUExecutionProvider"])
        name = plain.get_inputs()[0].name
        shape = [d if isinstance(d, int) else 1 for d in plain.get_inputs()[0].shape[1:]]
        print("| batch | plain session on model.onnx p50 (ms) | compiler engine p50 (ms) | engine / plain |")
        print("|---|---|---|---|")
        for batch in (1, 32):
            feed = {name: np.random.default_rng(0).random((batch, *shape), dtype=np.float32)}
            a, b = [], []
            for _ in range(args.rounds):  # interleave, so drift on the machine hits both alike
                a += _time(plain, feed, args.iterations // args.rounds)
                b += _time(engine, feed, args.iterations // args.rounds)
            pa, pb = statistics.median(a), statistics.median(b)
            print(f"| {batch} | {pa:.4f} | {pb:.4f} | {pb / pa:.3f} |")
        print(f"\n{args.iterations} timed runs per cell, {args.rounds} interleaved rounds, onnxruntime {ort.__version__}")


if __name__ == "__main__":
    main()
