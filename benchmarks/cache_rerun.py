"""What the cache saves: a cold compile, an identical second run, and an engine-flag-only change, against the
plain seed script (train + export + one onnxruntime check) timed in the same run.

    python benchmarks/cache_rerun.py [--recipe cnn_torch] [--repeats 3]
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


def _run(args: list[str], run_dir: Path, env: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "compiler", *args, f"hydra.run.dir={run_dir}"], env=env, check=True,
                   capture_output=True)
    elapsed = time.perf_counter() - start
    return elapsed, json.loads((run_dir / "report.json").read_text())


PLAIN = {"cnn_torch": Path(__file__).resolve().parent / "plain_cnn_torch.py",
         "cnn_tf": Path(__file__).resolve().parent / "plain_cnn_tf.py"}


def main() -> None:
    import statistics

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="cnn_torch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = [f"recipe={args.recipe}"]
    cases = [("first run (cold cache)", base), ("identical second run", base),
             ("engine flag changed", base + ["engine.onnxruntime.optimization_level=basic"])]
    times: dict[str, list[float]] = {label: [] for label, _ in cases}
    plain_times, built = [], {}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "COMPILER_CACHE_DIR": f"{tmp}/cache", "TF_CPP_MIN_LOG_LEVEL": "3"}
            if args.recipe in PLAIN:
                start = time.perf_counter()
                subprocess.run([sys.executable, str(PLAIN[args.recipe]), f"{tmp}/plain"], env=env, check=True,
                               capture_output=True)
                plain_times.append(time.perf_counter() - start)
            for i, (label, overrides) in enumerate(cases):
                seconds, report = _run(overrides, Path(tmp) / f"run{i}", env)
                times[label].append(seconds)
                built[label] = [n for n, s in report["stages"].items() if not s["cached"]]
    plain = statistics.median(plain_times) if plain_times else None
    first = statistics.median(times[cases[0][0]])
    print("| run | wall s (median) | vs first | vs plain script | stages built (not cached) |")
    print("|---|---|---|---|---|")
    if plain:
        print(f"| plain seed script | {plain:.2f} | {plain / first:.0%} | 1.00x | train, export, check |")
    for label, _ in cases:
        seconds = statistics.median(times[label])
        ratio = f"{seconds / plain:.2f}x" if plain else "-"
        print(f"| {label} | {seconds:.2f} | {seconds / first:.0%} | {ratio} | {', '.join(built[label]) or 'none'} |")
    print(f"\nmedian of {args.repeats} repeats, each in a fresh cache")


if __name__ == "__main__":
    main()
