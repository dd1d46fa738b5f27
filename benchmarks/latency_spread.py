"""Do identical engines get the same latency in one parallel sweep? A 4-job joblib sweep on this machine
(n_jobs=2), whose jobs are two pairs of identical engines, repeated; per pair, the b1 p50 spread.

    python benchmarks/latency_spread.py [--repeats 3] [--recipe cnn_torch]

The jobs of a pair differ only in verify.samples, which changes nothing that is built or timed. The
spread is (slower - faster) / faster of the pair's b1 p50: in the summary (every engine timed together at
the sweep's end, interleaved), and between the figures each job took alone at its own end.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def sweep(recipe: str, folder: Path, cache: Path) -> dict[str, float]:
    subprocess.run([sys.executable, "-m", "compiler", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    f"recipe={recipe}", "seed=0,1", "verify.samples=32,33", f"hydra.sweep.dir={folder}"],
                   env={**os.environ, "COMPILER_CACHE_DIR": str(cache)}, check=True, capture_output=True)
    rows = csv.DictReader(open(folder / "summary.csv"))
    return {r["overrides"]: (float(r["latency_b1_ms"]), float(r["job_latency_b1_ms"])) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipe", default="cnn_torch")
    args = parser.parse_args()
    print("| repeat | engine | summary b1 p50 ms (verify.samples=32) | (=33) | spread | each job's own b1 (=32) "
          "| (=33) | spread |")
    print("|---|---|---|---|---|---|---|---|")
    worst, worst_own = 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(1, args.repeats + 1):
            b1 = sweep(args.recipe, Path(tmp) / f"sweep{repeat}", Path(tmp) / "cache")
            for seed in (0, 1):
                pair = [v for k, v in b1.items() if f"seed={seed}" in k]
                together, own = [p[0] for p in pair], [p[1] for p in pair]
                spread = (max(together) - min(together)) / min(together)
                own_spread = (max(own) - min(own)) / min(own)
                worst, worst_own = max(worst, spread), max(worst_own, own_spread)
                print(f"| {repeat} | seed={seed} | {together[0]:.4f} | {together[1]:.4f} | {spread * 100:.1f} % | "
                      f"{own[0]:.4f} | {own[1]:.4f} | {own_spread * 100:.1f} % |", flush=True)
    print(f"\nworst spread of identical engines: {worst * 100:.1f} % in the summary (timed together), "
          f"{worst_own * 100:.1f} % between the jobs' own figures")


if __name__ == "__main__":
    main()
