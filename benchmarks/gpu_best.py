"""`precision: best` on a GPU against what a user would pick instead: the raw onnxruntime CUDA session, torch eager,
torch under autocast fp16, and torch.compile under autocast. Needs onnxruntime-gpu, torch with CUDA and a GPU.

    python benchmarks/gpu_best.py --recipe resnet_torch --timm vit_small_patch16_224 convnext_tiny resnet50 \\
        --bert --batch 64

For each target it runs `python -m compiler ... engine.precision=best` (exit code, every candidate and the choice
printed), then times, interleaved in rounds under the same conditions (median round, p50 per call, inputs and
outputs on the device):
- raw: `InferenceSession(model.onnx)` on the CUDA provider with its defaults (TF32 on), through I/O binding;
- torch eager fp32 with torch's defaults; torch eager under autocast fp16 (channels_last for conv nets);
  torch.compile (default mode) under autocast fp16 — contenders, not engines;
- every candidate engine the compiler built (candidates/<label>/), opened with the runtime settings written beside
  it (`<engine>.runtime.json`: providers, layout, CUDA graphs) exactly as the compiler verified and timed it.
A `--timm` model is built with random weights (timm ships in the GPU image), `--bert` is BERT-base from
`BertConfig()` at sequence 128 (transformers, no download); both are exported to ONNX here and compiled through
`recipe=onnx_file` with no data: the agreement gate judges their reduced precisions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TIMING = SimpleNamespace(iterations=100, warmup=10, max_seconds=1.0, warmup_seconds=0.5, quiet_tries=1)
RAW = "raw onnxruntime CUDA (defaults)"
BERT_SEQ = 128


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
    """torch's own defaults: no math-mode change (frameworks.in_math_mode leaves the globals alone)."""

    tf32 = None


def compile_best(target: dict, out: Path, batch: int) -> dict:
    run_dir = out / target["name"]
    cmd = [sys.executable, "-m", "compiler", *target["args"], "engine.precision=best",
           f"verify.latency.batch_sizes=[{batch}]", "quantize.fallback=none", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    # this checkout's compiler also where it is not installed (the compile runs from `out`, not the repo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, env=env)
    row = {"code": proc.returncode, "seconds": time.perf_counter() - started, "run_dir": run_dir}
    (out / f"{target['name']}.log").write_text(proc.stdout + proc.stderr)  # each stage's start, timestamped
    if proc.returncode != 0:
        row["tail"] = (proc.stdout + proc.stderr)[-3000:]
        return row
    report = json.loads((run_dir / "report.json").read_text())
    row["search"], row["report"] = report["search"], report
    row["chosen"] = next(r["candidate"] for r in report["search"] if r["chosen"])
    return row


def _export(model, feeds: dict, path: Path, dynamic: dict) -> None:
    import torch

    args = tuple(torch.from_numpy(v[:2]) for v in feeds.values())
    torch.onnx.export(model, args, str(path), input_names=list(feeds), output_names=["logits"], opset_version=17,
                      dynamic_axes={**dynamic, "logits": {0: "batch"}}, dynamo=False)


def timm_target(name: str, out: Path, batch: int) -> dict:
    import timm
    import torch

    torch.manual_seed(0)  # the same random weights each run: the same file, so a rerun reuses the compile cache
    model = timm.create_model(name, pretrained=False).eval()
    path = out / f"{name}.onnx"
    feeds = {"input": np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    _export(model, feeds, path, {"input": {0: "batch"}})
    args = ["recipe=onnx_file", f"model.path={path}", f"model.dims.batch=[1,{batch},{batch}]", "verify.samples=8"]
    return {"name": name, "args": args, "onnx": path, "module": model, "feeds": feeds, "conv": "vit" not in name}


class _LastHidden:
    """BertModel's last hidden state from positional (input_ids, attention_mask)."""

    def __new__(cls, model):
        import torch

        class LastHidden(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        return LastHidden(model)


def bert_target(out: Path, batch: int) -> dict:
    """BERT-base from `BertConfig()` (eager attention: the form onnxruntime 1.31/1.32 fuse for transformers 5) at
    sequence 128, batch and sequence dynamic as BERT ships."""
    import transformers

    import torch

    torch.manual_seed(0)
    model = _LastHidden(transformers.BertModel(transformers.BertConfig(attn_implementation="eager")).eval())
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 30522, (batch, BERT_SEQ)).astype(np.int64),
             "attention_mask": np.ones((batch, BERT_SEQ), np.int64)}
    path = out / "bert_base.onnx"
    _export(model, feeds, path, {k: {0: "batch", 1: "seq"} for k in feeds})
    inputs = ("'model.inputs=[{name: input_ids, dtype: int64, shape: [batch, seq], range: [0, 30522]}, "
              "{name: attention_mask, dtype: int64, shape: [batch, seq], values: [1]}]'")
    args = ["recipe=onnx_file", f"model.path={path}", f"model.dims.batch=[1,{batch},{batch}]",
            f"++model.dims.seq=[{BERT_SEQ},{BERT_SEQ},{BERT_SEQ}]", inputs.strip("'"), "verify.samples=8"]
    return {"name": "bert_base", "args": args, "onnx": path, "module": model, "feeds": feeds, "conv": False}


def recipe_target(recipe: str, batch: int) -> dict:
    return {"name": recipe, "args": [f"recipe={recipe}"], "conv": True}


def torch_module_of(target: dict, compiled: dict):
    """The torch model behind a target: the exported module, or the recipe's trained model.pt."""
    if "module" in target:
        return target["module"]
    from omegaconf import OmegaConf

    from compiler.frameworks.torch.runtime import load_trained
    from compiler.iospec import IOSpec
    from compiler.schema import RecipeConfig

    run_dir = compiled["run_dir"]
    cfg = OmegaConf.merge(OmegaConf.structured(RecipeConfig), OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    return load_trained(cfg, IOSpec.from_cfg(cfg), run_dir / "model.pt")


def _feeds(target: dict, compiled: dict, batch: int) -> dict:
    if "feeds" in target:
        return target["feeds"]
    shape = compiled["report"]["io_spec"]["inputs"][0]["shape"]
    name = compiled["report"]["io_spec"]["inputs"][0]["name"]
    return {name: np.random.default_rng(0).standard_normal((batch, *shape[1:])).astype(np.float32)}


def contenders(target: dict, compiled: dict, feed: dict) -> dict:
    import onnxruntime as ort
    import torch

    from compiler.backends.onnxruntime import engine_session, read_runtime
    from compiler.verify.device_runners import OrtDeviceRunner, OrtGraphRunner, TorchDeviceRunner

    run_dir = compiled["run_dir"]
    raw_path = target.get("onnx") or run_dir / "model.onnx"
    runners = {RAW: OrtDeviceRunner(
        lambda: ort.InferenceSession(str(raw_path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]), "raw")}
    module = torch_module_of(target, compiled).cuda().eval()
    names = list(feed)
    runners["torch eager fp32 (defaults)"] = TorchDeviceRunner(Wrapped(module, names), "torch", Defaults())
    fp16 = module.to(memory_format=torch.channels_last) if target.get("conv") else module
    tag = " (channels_last)" if target.get("conv") else ""
    autocast = lambda: torch.autocast("cuda", dtype=torch.float16)  # noqa: E731
    runners["torch eager autocast fp16" + tag] = TorchDeviceRunner(Wrapped(fp16, names, autocast), "torch-fp16",
                                                                    Defaults())
    runners["torch.compile + autocast fp16" + tag] = TorchDeviceRunner(
        Wrapped(torch.compile(fp16), names, autocast), "torch-compile", Defaults())
    for row in compiled["search"]:
        folder = run_dir / "candidates" / row["candidate"]
        engine = next((f for f in (folder / "model.opt.onnx", folder / "model.ort") if f.exists()), None)
        settings = read_runtime(engine) if engine else None
        if settings is None:
            continue
        runner = OrtGraphRunner if settings.get("cuda_graph") else OrtDeviceRunner
        label = f"compiler {row['candidate']}" + (" (chosen)" if row["chosen"] else "") + \
            ("" if row["passed"] else " (failed its gates)")
        runners[label] = runner(lambda e=engine, s=settings: engine_session(e, s), row["candidate"])
    return runners


def _placement(folder: Path) -> dict:
    """A candidate's node placement as its verify measured it ({} where none was)."""
    verify = folder / "verify.json"
    return (json.loads(verify.read_text()).get("placement") or {}) if verify.exists() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", nargs="*", default=["resnet_torch"])
    parser.add_argument("--timm", nargs="*", default=["vit_small_patch16_224"])
    parser.add_argument("--bert", action="store_true", help="BERT-base from BertConfig() at sequence 128")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu_best"))
    args = parser.parse_args()
    import torch  # noqa: F401  (loads CUDA and cuDNN for onnxruntime-gpu)

    from compiler.verify.latency import compare

    args.out.mkdir(parents=True, exist_ok=True)
    targets = [recipe_target(r, args.batch) for r in args.recipe]
    targets += [timm_target(name, args.out, args.batch) for name in args.timm]
    if args.bert:
        targets.append(bert_target(args.out, args.batch))
    table = []
    for target in targets:
        compiled = compile_best(target, args.out, args.batch)
        print(f"{target['name']}: precision=best exit {compiled['code']} in {compiled['seconds']:.0f} s"
              + (f", chose {compiled['chosen']}" if compiled["code"] == 0 else "\n" + compiled.get("tail", "")), flush=True)
        if compiled["code"] != 0:
            continue
        fused = (compiled["report"].get("quantize") or {}).get("fused_for_gpu")
        if fused:
            print(f"  fused ({fused['model_type']}, {fused['num_heads']} heads): {fused['fused_operators']}")
        for row in compiled["search"]:
            print(f"  candidate {row['candidate']}: passed={row['passed']} memcpy={row['memcpy']} ({row['why']})")
            placed = _placement(compiled["run_dir"] / "candidates" / row["candidate"])
            if placed.get("memcpy_nodes") or placed.get("cpu_nodes"):
                print(f"    copies: {placed['memcpy_nodes'][:6]}; on the CPU: {placed['cpu_nodes'][:8]}")
                for copy in (placed.get("copies") or [])[:6]:
                    print(f"      {copy}")
        feed = _feeds(target, compiled, args.batch)
        runners = contenders(target, compiled, feed)
        timed = compare(runners, {name: {args.batch: feed} for name in runners}, TIMING)
        raw = timed[RAW][f"b{args.batch}"]["p50"]
        rows = [(target["name"], name, per[f"b{args.batch}"]["p50"]) for name, per in timed.items()]
        rows = [(model, name, p50, args.batch * 1e3 / p50, raw / p50) for model, name, p50 in rows]
        _print_table(rows, args.batch)  # each model's rows as soon as they are measured
        table += rows
    if len(targets) > 1:
        _print_table(table, args.batch)


def _print_table(rows: list[tuple], batch: int) -> None:
    print(f"\n| model | contender | p50 ms at b{batch} | samples/s | vs raw session |\n|---|---|---|---|---|")
    for model, name, p50, ips, ratio in rows:
        print(f"| {model} | {name} | {p50:.3f} | {ips:,.0f} | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
