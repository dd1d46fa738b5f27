"""End-to-end speed: hand-written seed scripts vs the compiler on the same recipe, in one run.

Each pair runs alternately `--repeats` times (cold cache for the compiler every time, so it
trains like the plain script does); the table gives median wall times and their ratio, and the
compiler's per-stage times from its report.json.
    python benchmarks/run.py [--repeats 3] [--only cnn_torch]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAIRS = {"cnn_torch": HERE / "plain_cnn_torch.py", "cnn_tf": HERE / "plain_cnn_tf.py"}


def _timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def bench(recipe: str, plain: Path, repeats: int) -> dict:
    plain_times, compiler_times, stages = [], [], {}
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "COMPILER_CACHE_DIR": f"{tmp}/cache", "TF_CPP_MIN_LOG_LEVEL": "3"}
            plain_times.append(_timed([sys.executable, str(plain), f"{tmp}/plain"], env))
            run_dir = Path(tmp) / "run"
            compiler_times.append(_timed([sys.executable, "-m", "compiler", f"recipe={recipe}",
                                          f"hydra.run.dir={run_dir}"], env))
            report = json.loads((run_dir / "report.json").read_text())
            for name, s in report["stages"].items():
                stages.setdefault(name, []).append(s["seconds"])
    p, c = statistics.median(plain_times), statistics.median(compiler_times)
    return {"recipe": recipe, "plain_s": p, "compiler_s": c, "ratio": c / p,
            "stages": {n: statistics.median(v) for n, v in stages.items()}, "repeats": repeats,
            "accuracy": report["metrics"]["accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=sorted(PAIRS))
    args = parser.parse_args()
    rows = [bench(r, p, args.repeats) for r, p in PAIRS.items() if args.only in (None, r)]
    print(f"\n| recipe | plain script (s) | compiler (s) | ratio (goal <= 1.15) | {' | '.join(rows[0]['stages'])} |")
    print("|---|---|---|---|" + "---|" * len(rows[0]["stages"]))
    for r in rows:
        stage_cells = " | ".join(f"{v:.2f}" for v in r["stages"].values())
        print(f"| {r['recipe']} | {r['plain_s']:.2f} | {r['compiler_s']:.2f} | {r['ratio']:.2f}x | {stage_cells} |")
    print(f"\nmedian of {args.repeats} alternating runs each; compiler with a cold cache; "
          f"per-stage columns are the compiler's own stage times (s).")


if __name__ == "__main__":
    main()
