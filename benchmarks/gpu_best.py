"""`precision: best` on a GPU against the raw onnxruntime CUDA session and torch eager, at one batch, inputs on
the device. Needs onnxruntime-gpu, torch with CUDA and a GPU.

    python benchmarks/gpu_best.py --recipe resnet_torch --timm vit_small_patch16_224 convnext_tiny [--batch 64]

For each target it runs `python -m compiler ... engine.precision=best` (exit code and choice printed), then times,
interleaved in rounds under the same conditions (median round, p50 per call, inputs and outputs on the device):
- raw: `InferenceSession(model.onnx)` on the CUDA provider with its defaults (TF32 on), through I/O binding;
- torch eager fp32 with torch's defaults, and torch eager under autocast fp16 (channels_last for conv nets);
- every candidate engine the compiler built (candidates/<precision>/), loaded as the compiler loads it.
A `--timm` model is built with random weights (timm ships in the GPU image), exported to ONNX here and compiled
through `recipe=onnx_file` with no data: the agreement gate judges its reduced precisions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TIMING = SimpleNamespace(iterations=100, warmup=10, max_seconds=1.0, warmup_seconds=0.5, quiet_tries=1)


class Wrapped:
    """A torch module as the compiler's device runner calls it: named inputs, a tuple of outputs, a forward
    context (autocast or nothing)."""

    def __init__(self, module, input_names, context=contextlib.nullcontext):
        self.module, self.input_names, self.context = module, list(input_names), context

    def __call__(self, *xs):
        with self.context():
            out = self.module(*xs)
        return out if isinstance(out, (tuple, list)) else (out,)


class Defaults:
    """torch's own defaults: no math-mode change."""

    def framework(self):
        return contextlib.nullcontext()


def compile_best(target: dict, out: Path, batch: int) -> dict:
    run_dir = out / target["name"]
    cmd = [sys.executable, "-m", "compiler", *target["args"], "engine.precision=best",
           f"verify.latency.batch_sizes=[{batch}]", "quantize.fallback=none", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
    row = {"code": proc.returncode, "seconds": time.perf_counter() - started, "run_dir": run_dir}
    if proc.returncode != 0:
        row["tail"] = (proc.stdout + proc.stderr)[-3000:]
        return row
    report = json.loads((run_dir / "report.json").read_text())
    row["search"] = report["search"]
    row["chosen"] = next(r["precision"] for r in report["search"] if r["chosen"])
    return row


def timm_target(name: str, out: Path, batch: int) -> tuple[dict, object]:
    import timm
    import torch

    model = timm.create_model(name, pretrained=False).eval()
    path = out / f"{name}.onnx"
    x = torch.randn(2, 3, 224, 224)
    try:
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    except Exception as exc:  # the TorchScript exporter may be gone: the dynamo exporter
        print(f"{name}: TorchScript export failed ({exc}); dynamo", flush=True)
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=256)}}, dynamo=True)
    args = ["recipe=onnx_file", f"model.path={path}", f"model.dims.batch=[1,{batch},{batch}]", "verify.samples=8"]
    return {"name": name, "args": args, "onnx": path}, model


def recipe_target(recipe: str) -> dict:
    return {"name": recipe, "args": [f"recipe={recipe}"]}


def torch_module_of(target: dict, compiled: dict):
    """The torch model behind a target: the timm module, or the recipe's trained model.pt."""
    if "module" in target:
        return target["module"]
    from omegaconf import OmegaConf

    from compiler.iospec import IOSpec
    from compiler.schema import RecipeConfig
    from compiler.frameworks.torch.runtime import load_trained

    run_dir = compiled["run_dir"]
    cfg = OmegaConf.merge(OmegaConf.structured(RecipeConfig), OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    return load_trained(cfg, IOSpec.from_cfg(cfg), run_dir / "model.pt")


def contenders(target: dict, compiled: dict, feed: dict) -> dict:
    import onnxruntime as ort
    import torch

    from compiler.backends.onnxruntime import load_session
    from compiler.plan import EnginePlan
    from compiler.verify.device_runners import OrtDeviceRunner, TorchDeviceRunner

    run_dir = compiled["run_dir"]
    raw_path = target.get("onnx") or run_dir / "model.onnx"
    runners = {"raw onnxruntime CUDA (defaults)": OrtDeviceRunner(
        lambda: ort.InferenceSession(str(raw_path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]), "raw")}
    module = torch_module_of(target, compiled).cuda().eval()
    names = list(feed)
    conv = any(isinstance(m, torch.nn.Conv2d) for m in module.modules())
    runners["torch eager fp32 (defaults)"] = TorchDeviceRunner(Wrapped(module, names), "torch", Defaults())
    fp16 = module
    if conv:
        fp16 = module.to(memory_format=torch.channels_last)
    runners["torch eager autocast fp16" + (" (channels_last)" if conv else "")] = TorchDeviceRunner(
        Wrapped(fp16, names, lambda: torch.autocast("cuda", dtype=torch.float16)), "torch-fp16", Defaults())
    report = json.loads((run_dir / "report.json").read_text())
    base = report["engine"]["plan"]
    onnxruntime_cfg = report["recipe_config"]["engine"]["onnxruntime"]
    for row in compiled["search"]:
        folder = run_dir / "candidates" / row["precision"]
        engine = next((f for f in (folder / "model.opt.onnx", folder / "model.ort") if f.exists()), None)
        if engine is None:
            continue
        plan = EnginePlan(backend=base["backend"], reason="", precision=row["precision"],
                          onnxruntime={**onnxruntime_cfg, "providers": base.get("providers"),
                                       "disabled_optimizers": ["QDQPropagationTransformer"]
                                       if row["precision"] == "int8" else []})
        runners[f"compiler {row['precision']}" + (" (chosen)" if row["chosen"] else "") +
                ("" if row["passed"] else " (failed its gates)")] = OrtDeviceRunner(
            lambda e=engine, p=plan: load_session(e, p), row["precision"])
    return runners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", nargs="*", default=["resnet_torch"])
    parser.add_argument("--timm", nargs="*", default=["vit_small_patch16_224"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu_best"))
    args = parser.parse_args()
    import torch  # noqa: F401  (loads CUDA and cuDNN for onnxruntime-gpu)

    from compiler.verify.latency import compare

    args.out.mkdir(parents=True, exist_ok=True)
    targets = [recipe_target(r) for r in args.recipe]
    for name in args.timm:
        target, module = timm_target(name, args.out, args.batch)
        target["module"] = module
        targets.append(target)
    table = []
    for target in targets:
        compiled = compile_best(target, args.out, args.batch)
        print(f"{target['name']}: precision=best exit {compiled['code']} in {compiled['seconds']:.0f} s"
              + (f", chose {compiled['chosen']}" if compiled["code"] == 0 else "\n" + compiled.get("tail", "")), flush=True)
        if compiled["code"] != 0:
            continue
        for row in compiled["search"]:
            print(f"  candidate {row['precision']}: passed={row['passed']} ({row['why']})")
        shape = (args.batch, *_sample_shape(compiled))
        feed = {"input": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        runners = contenders(target, compiled, feed)
        timed = compare(runners, {name: {args.batch: feed} for name in runners}, TIMING)
        raw = timed["raw onnxruntime CUDA (defaults)"][f"b{args.batch}"]["p50"]
        for name, per in timed.items():
            p50 = per[f"b{args.batch}"]["p50"]
            table.append((target["name"], name, p50, args.batch * 1e3 / p50, raw / p50))
    print(f"\n| model | contender | p50 ms at b{args.batch} | images/s | vs raw session |\n|---|---|---|---|---|")
    for model, name, p50, ips, ratio in table:
        print(f"| {model} | {name} | {p50:.3f} | {ips:,.0f} | {ratio:.2f}x |")


def _sample_shape(compiled: dict) -> tuple:
    report = json.loads((compiled["run_dir"] / "report.json").read_text())
    shape = report["io_spec"]["inputs"][0]["shape"]
    return tuple(d for d in shape[1:])


if __name__ == "__main__":
    main()
