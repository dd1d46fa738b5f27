"""TensorRT-RTX builder check on a lent GPU: the compiler's own TensorRT backend (Polygraphy, with
POLYGRAPHY_USE_TENSORRT_RTX) builds each ONNX model of a folder, then tries to run it.

    python benchmarks/rtx_builder_check.py --prepare MODELS_DIR [--recipes cnn_torch resnet_torch]   # here (CPU)
    python benchmarks/rtx_builder_check.py --prepare-corpus RUNS_DIR MODELS_DIR [--max-mb 4]          # here (CPU)
    python benchmarks/rtx_builder_check.py MODELS_DIR [--out rtx.json]                               # on the GPU

`--prepare-corpus` takes the run folders benchmarks/corpus/compile.py left (one per foreign file that compiled)
and writes each file's imported model (`<file>.raw.onnx`, model.onnx) beside its cleaned one (`.clean.onnx`),
with the shapes verification used as the profile: the builder then judges raw against clean.

`--prepare` compiles each recipe and converts its cleaned model the way the plan does for TensorRT
(ModelOpt AutoCast fp16; ModelOpt PTQ int8 Q/DQ with the rest in fp16), on this machine's CPU.

MODELS_DIR holds `<recipe>.<precision>.onnx` files (fp32 cleaned models, ModelOpt fp16 and int8 Q/DQ
models) and `<recipe>.profiles.json` ({input: [min, opt, max] shapes}). Prints one row per model: parse +
build, seconds, engine size, and whether the runtime ran it, with its exact message when it refused.
Needs tensorrt_rtx (tensorrt-rtx-cu13-libs + -bindings) and a CUDA GPU; the compiler needs nothing else here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import time
from enum import Enum
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.backends import TensorRTConfig  # noqa: E402
from compiler.plan import EnginePlan  # noqa: E402


class Profiles:
    """The IO spec's one method the backend calls, read from a JSON file."""

    def __init__(self, shapes: dict):
        self.shapes = shapes

    def engine_profiles(self):
        return [{name: tuple(s) for name, s in self.shapes.items()}]


def plan_for(precision: str) -> EnginePlan:
    section = {f.name: getattr(TensorRTConfig(), f.name) for f in dataclasses.fields(TensorRTConfig)}
    section = {k: (v.value if isinstance(v, Enum) else v) for k, v in section.items()}
    return EnginePlan(backend="tensorrt_rtx", reason="benchmark", precision=precision,
                      conversion="none" if precision == "fp32" else precision, tool="modelopt", tensorrt=section)


def check(model: Path, profiles: Profiles, out_dir: Path, run_corpus: bool = False) -> dict:
    import numpy as np

    from compiler.backends.tensorrt import build, runner

    tag = model.suffixes[-2].lstrip(".")
    precision = "fp32" if tag in ("raw", "clean") else tag  # a corpus file, as imported or as cleaned
    row = {"model": model.name, "precision": precision}
    started = time.perf_counter()
    work = out_dir / model.stem
    work.mkdir(parents=True, exist_ok=True)
    try:
        name, info = build(model, work, plan_for(precision), profiles)
        row.update(build="ok", build_s=round(time.perf_counter() - started, 2),
                   engine_bytes=(work / name).stat().st_size, tensorrt_rtx=info["tensorrt"])
    except Exception as exc:  # the builder's own refusal, verbatim
        row.update(build="refused", build_s=round(time.perf_counter() - started, 2), message=str(exc)[-600:])
        return row
    if tag in ("raw", "clean") and not run_corpus:
        return row  # the runtime refuses every engine on a GPU it does not run on: the build is the question
    log = io.StringIO()
    try:
        opt = {n: s[1] for n, s in profiles.shapes.items()}
        feed = {n: np.random.default_rng(0).random(shape, dtype=np.float32) for n, shape in opt.items()}
        with contextlib.redirect_stdout(log), runner(work / name, "tensorrt_rtx") as r:
            outputs = r.infer(feed)
        row.update(run="ok", outputs={k: list(v.shape) for k, v in outputs.items()})
    except Exception as exc:  # TensorRT's own reason is the logged [E] line; Polygraphy's exception only points to it
        errors = [line for line in log.getvalue().splitlines() if line.startswith("[E]")]
        row.update(run="refused", run_message=(errors[0] if errors else str(exc))[:600])
    return row


def prepare(folder: Path, recipes: list[str]) -> None:
    """The catalogue's fp32 cleaned models and their ModelOpt fp16 / int8 conversions, with their profiles."""
    import os
    import subprocess
    import tempfile

    from omegaconf import OmegaConf

    from compiler.data.sources import load_dataset
    from compiler.iospec import IOSpec
    from compiler.schema import RecipeConfig
    from compiler.stages.modelopt_convert import convert

    folder.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in recipes:
            run = Path(tmp) / recipe
            subprocess.run([sys.executable, "-m", "compiler", f"recipe={recipe}", f"hydra.run.dir={run}"], check=True,
                           capture_output=True, env={**os.environ, "COMPILER_CACHE_DIR": f"{tmp}/cache"})
            clean = folder / f"{recipe}.fp32.onnx"
            clean.write_bytes((run / "model.clean.onnx").read_bytes())
            cfg = OmegaConf.merge(OmegaConf.structured(RecipeConfig), OmegaConf.load(root / "recipes" / f"{recipe}.yaml"))
            io = IOSpec.from_cfg(cfg)
            samples = io.to_engine(load_dataset(cfg.data, io, cfg.seed).calibration(cfg.data.calibration_size))
            for precision in ("fp16", "int8"):
                convert(clean, folder / f"{recipe}.{precision}.onnx", precision, [], samples, cfg.quantize, "fp16",
                        Path(tmp))
            shapes = io.engine_profiles()[0]
            (folder / f"{recipe}.profiles.json").write_text(json.dumps({k: list(v) for k, v in shapes.items()}))
            print(f"prepared {recipe}", flush=True)


def prepare_corpus(runs: Path, folder: Path, max_mb: float) -> None:
    """Raw (imported) and cleaned models of every corpus file that compiled, with their verified shapes."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for run in sorted(p for p in runs.iterdir() if (p / "report.json").is_file()):
        report = json.loads((run / "report.json").read_text())
        files = [run / "model.onnx", run / "model.clean.onnx"]
        external = any(run.glob("*.data"))
        if report["status"] != "passed" or external or any(f.stat().st_size > max_mb * 2**20 for f in files):
            continue
        shapes = report["verified_shapes"]
        labels = {position: next((label for label in shapes if position in label.split("=")), None)
                  for position in ("min", "opt", "max")}
        if None in labels.values():
            continue
        names = list(shapes[labels["opt"]])
        profile = {n: [shapes[labels[p]][n] for p in ("min", "opt", "max")] for n in names}
        name = run.name.replace(".", "_")
        (folder / f"{name}.raw.onnx").write_bytes(files[0].read_bytes())
        (folder / f"{name}.clean.onnx").write_bytes(files[1].read_bytes())
        (folder / f"{name}.profiles.json").write_text(json.dumps(profile))
        count += 1
    print(f"prepared {count} corpus files (raw and clean) in {folder}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", type=Path)
    parser.add_argument("--out", type=Path, default=Path("rtx.json"))
    parser.add_argument("--prepare", action="store_true", help="write the models here (CPU), for a GPU run later")
    parser.add_argument("--recipes", nargs="+", default=["cnn_torch", "resnet_torch"])
    parser.add_argument("--prepare-corpus", type=Path, metavar="RUNS_DIR")
    parser.add_argument("--max-mb", type=float, default=4.0, help="--prepare-corpus: skip larger models")
    args = parser.parse_args()
    if args.prepare:
        return prepare(args.models, args.recipes)
    if args.prepare_corpus:
        return prepare_corpus(args.prepare_corpus, args.models, args.max_mb)
    rows = []
    for model in sorted(args.models.glob("*.onnx")):
        shapes = json.loads((args.models / f"{model.name.split('.')[0]}.profiles.json").read_text())
        rows.append(check(model, Profiles(shapes), Path("/tmp/rtx_engines")))
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps(rows, indent=2))
    corpus = [r for r in rows if r["model"].split(".")[-2] in ("raw", "clean")]
    for tag in ("raw", "clean"):
        mine = [r for r in corpus if r["model"].split(".")[-2] == tag]
        if mine:
            print(f"corpus {tag}: {sum(r['build'] == 'ok' for r in mine)} of {len(mine)} parse and build")
    print(f"\n{'model':32} {'build':8} {'s':>6} {'bytes':>10} {'run':8} message")
    for r in rows:
        print(f"{r['model']:32} {r['build']:8} {r['build_s']:6} {r.get('engine_bytes', ''):>10} {r.get('run', '-'):8} "
              f"{(r.get('message') or r.get('run_message') or '')[:160]}")


if __name__ == "__main__":
    main()
