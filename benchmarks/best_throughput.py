"""`engine.precision: best` against a raw onnxruntime fp32 session on the raw export: b32 throughput and
top-1, one run.

    python benchmarks/best_throughput.py [--recipes cnn_torch resnet_torch] [--iterations 300]

Each recipe is compiled once with `engine.precision=best` (and `intra_op_threads: auto`). The baseline is
what a user gets by hand: `onnxruntime.InferenceSession(model.onnx)` with default options on the
exported model the same run wrote. The compiled engine is loaded the way its report says (threads,
disabled transformers). Both are timed interleaved, in one process, on the same batch of 32 test samples,
and both are scored on the whole test split.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def compile_best(recipe: str, out: Path, cache: Path) -> dict:
    env = {**os.environ, "COMPILER_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-m", "compiler", f"recipe={recipe}", "engine.precision=best",
                    "engine.onnxruntime.intra_op_threads=auto", f"hydra.run.dir={out}"], env=env, check=True,
                   capture_output=True)
    return json.loads((out / "report.json").read_text())


def test_split(recipe: str) -> tuple[dict, np.ndarray]:
    """The recipe's test inputs (engine layout) and labels, as the compile saw them."""
    from omegaconf import OmegaConf

    from compiler.data.sources import load_dataset
    from compiler.iospec import IOSpec
    from compiler.schema import RecipeConfig

    root = Path(__file__).resolve().parents[1]
    cfg = OmegaConf.merge(OmegaConf.structured(RecipeConfig), OmegaConf.load(root / "recipes" / f"{recipe}.yaml"))
    io = IOSpec.from_cfg(cfg)
    data = load_dataset(cfg.data, io, cfg.seed)
    return io.to_engine(data.x_test), data.y_test


def top1(session: ort.InferenceSession, x: dict, y: np.ndarray) -> float:
    hits = 0
    n = len(y)
    for start in range(0, n, 256):
        out = session.run(None, {k: v[start:start + 256] for k, v in x.items()})[0]
        hits += int((out.argmax(-1) == y[start:start + 256]).sum())
    return hits / n


def row(recipe: str, folder: Path, iterations: int) -> str:
    report = compile_best(recipe, folder / recipe, folder / "cache")
    run = folder / recipe
    raw = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    auto = report["latency_conditions"].get("intra_op_threads", {})
    threads = auto.get("chosen", 0)
    print(f"{recipe}: intra_op_threads auto " + ", ".join(f"{r['intra_op_threads']}: {r['rounds']}"
                                                         for r in auto.get("table", [])), file=sys.stderr)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    engine = ort.InferenceSession(str(run / report["stages"]["build"]["artifact"]), options,
                                  providers=["CPUExecutionProvider"],
                                  disabled_optimizers=report["engine"].get("disabled_optimizers") or [])
    x, y = test_split(recipe)
    feed = {k: np.ascontiguousarray(v[:32]) for k, v in x.items()}
    rates: dict[str, list[float]] = {"raw": [], "best": []}
    for _ in range(5):  # interleaved rounds: drifts of the machine hit both alike
        for name, session in (("raw", raw), ("best", engine)):
            rates[name] += [32e3 / ms for ms in session_run_ms(session, feed, iterations // 5)]
    raw_rate, best_rate = statistics.median(rates["raw"]), statistics.median(rates["best"])
    raw_acc, best_acc = top1(raw, x, y), top1(engine, x, y)
    chosen = next(r for r in report["search"] if r["chosen"])
    table = ", ".join(f"{r['precision']} {r['speed_ms']:.2f} ms{'' if r['passed'] else ' (failed)'}"
                      for r in report["search"])
    return (f"| {recipe} | {chosen['precision']} ({chosen['tool']}) | {threads} | {table} | {raw_acc:.4f} | "
            f"{best_acc:.4f} | {(raw_acc - best_acc) * 100:.2f} | {raw_rate:.0f} | {best_rate:.0f} | "
            f"{best_rate / raw_rate:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["cnn_torch", "resnet_torch"])
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    print(machine_line())
    print("| recipe | best chose | threads | candidates (p50 at the largest batch) | raw fp32 top-1 | best top-1 "
          "| drop (points) | raw fp32 samples/s (b32) | best samples/s (b32) | best / raw |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            print(row(recipe, Path(tmp), args.iterations), flush=True)


if __name__ == "__main__":
    main()
