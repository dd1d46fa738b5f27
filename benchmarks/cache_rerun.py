"""What the cache saves: a cold compile, an identical second run, and an engine-flag-only change.

    python benchmarks/cache_rerun.py [--recipe cnn_torch]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="cnn_torch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "COMPILER_CACHE_DIR": f"{tmp}/cache", "TF_CPP_MIN_LOG_LEVEL": "3"}
        base = [f"recipe={args.recipe}"]
        cases = [("first run (cold cache)", base), ("identical second run", base),
                 ("engine flag changed", base + ["engine.onnxruntime.optimization_level=basic"])]
        rows = []
        for i, (label, overrides) in enumerate(cases):
            seconds, report = _run(overrides, Path(tmp) / f"run{i}", env)
            built = [n for n, s in report["stages"].items() if not s["cached"]]
            rows.append((label, seconds, built))
        first = rows[0][1]
        print("| run | wall s | vs first | stages built (not cached) |")
        print("|---|---|---|---|")
        for label, seconds, built in rows:
            print(f"| {label} | {seconds:.2f} | {seconds / first:.0%} | {', '.join(built) or 'none'} |")


if __name__ == "__main__":
    main()
