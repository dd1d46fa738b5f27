"""Where a chosen GPU engine spends its time, against torch under autocast fp16 on the same model: for a model that
misses a `gpu_best.py` goal, the measured reason. Run after `gpu_best.py`, on one model's folder of its `--out`:

    python benchmarks/gpu_breakdown.py /tmp/gpu_best/resnet50 --timm resnet50 --batch 64

It prints
- GPU time per call by kernel kind (convolution, GEMM, elementwise, normalisation, layout, ...) and the heaviest
  kernels, for the chosen engine and for torch eager autocast fp16 (channels_last), both taken by CUPTI through
  torch's profiler (onnxruntime's own profiler times kernel launches, not the GPU). The engine runs with its runtime
  settings less graph capture, whose replay hides the kernels from the profile;
- the chosen engine's p50 under CUDA-provider options a user might try, and a hand-made baseline of the raw file
  (onnxruntime's float16 converter, `prefer_nhwc`, CUDA graph), timed in interleaved rounds like gpu_best.py.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_best import TIMING  # noqa: E402  (benchmarks/ is the script's folder)

PROFILED_CALLS = 20
KINDS = (  # first match wins: cuDNN's fused convolution kernels carry "relu"/"bias" in their names too
    ("normalisation", r"norm|bn_fw|bn_bw"),
    ("layout", r"transpose|nchwtonhwc|nhwctonchw|permute|copy|memcpy|contiguous"),
    ("convolution", r"conv|fprop|implicit|cudnn|winograd"),
    ("gemm", r"gemm|cublas|cutlass|matmul"),
    ("attention", r"attention|fmha|flash|softmax"),
    ("pooling", r"pool|reduce"),
    ("elementwise", r"elementwise|binary|unary|relu|add|mul|gelu|sigmoid|cast|clamp|fill|vectorized"),
)


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, name)), "other")


def kernel_times(run, calls: int = PROFILED_CALLS) -> dict[str, float]:
    """GPU milliseconds per call of each kernel `run()` launches (CUPTI, every kernel of the process)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(5):
        run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            run()
        torch.cuda.synchronize()
    times: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        us = getattr(event, "self_device_time_total", None)
        us = us if us is not None else getattr(event, "self_cuda_time_total", 0)
        if us:
            times[event.key] += us / 1e3 / calls
    return dict(times)


def print_breakdown(label: str, times: dict[str, float], top: int = 8) -> None:
    by_kind: dict[str, float] = defaultdict(float)
    for kernel, ms in times.items():
        by_kind[kind_of(kernel)] += ms
    total = sum(times.values())
    print(f"\n{label}: {total:.3f} ms of GPU time per call")
    print("| kind | ms per call | share |\n|---|---|---|")
    for kind, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {ms:.3f} | {ms / total:.0%} |")
    print("heaviest kernels:")
    for kernel, ms in sorted(times.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {ms:.3f} ms  [{kind_of(kernel)}] {kernel[:110]}")


def census(engine: Path) -> str:
    """The engine's operators, and how many of its convolutions and GEMMs kept fp32 weights (a node the fp16
    conversion left in fp32 runs its fp32 kernel, between two Casts)."""
    from collections import Counter

    import onnx

    graph = onnx.load(str(engine), load_external_data=False).graph
    dtype = {t.name: t.data_type for t in graph.initializer}
    heavy = [n for n in graph.node if n.op_type in ("Conv", "FusedConv", "Gemm", "MatMul") and len(n.input) > 1]
    fp32 = sum(dtype.get(n.input[1]) == onnx.TensorProto.FLOAT for n in heavy)
    ops = ", ".join(f"{op} {count}" for op, count in Counter(n.op_type for n in graph.node).most_common(10))
    return f"{ops}; {fp32} of {len(heavy)} Conv/Gemm/MatMul with fp32 weights"


def with_cuda_options(settings: dict, **options: str) -> dict:
    providers = [[name, {**opts, **options} if name == "CUDAExecutionProvider" else opts]
                 for name, opts in settings["providers"]]
    return {**settings, "providers": providers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="one model's folder of gpu_best.py's --out")
    parser.add_argument("--timm", required=True, help="the timm model the folder was compiled from")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    import onnxruntime as ort
    import timm
    import torch

    from compiler.backends.onnxruntime import engine_session, read_runtime, without_graph_capture
    from compiler.verify.device_runners import OrtDeviceRunner, OrtGraphRunner
    from compiler.verify.latency import compare

    report = json.loads((args.run_dir / "report.json").read_text())
    chosen = next(r["candidate"] for r in report["search"] if r["chosen"])
    engine = args.run_dir / "candidates" / chosen / "model.opt.onnx"
    settings = read_runtime(engine)
    print(f"{args.run_dir.name}: chosen {chosen}; runtime {json.dumps(settings['providers'])}")
    kept = (report.get("quantize") or {}).get("kept_fp32_overflow")
    print(f"engine: {census(engine)}; kept fp32 for range: {kept}")
    feed = {report["io_spec"]["inputs"][0]["name"]:
            np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(np.float32)}

    with OrtDeviceRunner(lambda: engine_session(engine, without_graph_capture(settings)), chosen) as runner:
        engine_times = kernel_times(lambda: runner.infer(feed))
    torch.manual_seed(0)
    module = timm.create_model(args.timm, pretrained=False).eval().cuda().to(memory_format=torch.channels_last)
    x = torch.from_numpy(feed[next(iter(feed))]).cuda()

    def autocast() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            module(x)

    torch_times = kernel_times(autocast)
    print_breakdown(f"engine {chosen} (no graph capture)", engine_times)
    print_breakdown("torch eager autocast fp16 (channels_last)", torch_times)

    from onnxruntime.transformers.float16 import convert_float_to_float16
    import onnx

    raw = args.run_dir.parent / f"{args.timm}.onnx"
    hand = args.run_dir.parent / f"{args.timm}.hand_fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(raw)), keep_io_types=True), str(hand))
    hand_cuda = {"prefer_nhwc": "1", "enable_cuda_graph": "1"}
    hand_settings = {**settings, "providers": [["CUDAExecutionProvider", hand_cuda], ["CPUExecutionProvider", {}]],
                     "cuda_graph": True}
    base = without_graph_capture(settings)
    nhwc = dict(base["providers"][0][1]).get("prefer_nhwc", "0")
    variants = {
        f"engine {chosen} (as shipped)": settings,
        "engine, no CUDA graph": base,
        "engine, cudnn_conv_algo_search=HEURISTIC": with_cuda_options(base, cudnn_conv_algo_search="HEURISTIC"),
        "engine, fuse_conv_bias=1": with_cuda_options(base, fuse_conv_bias="1"),
        "engine as shipped + fuse_conv_bias=1": with_cuda_options(settings, fuse_conv_bias="1"),
        "engine, cudnn_conv_use_max_workspace=0": with_cuda_options(base, cudnn_conv_use_max_workspace="0"),
        "engine, prefer_nhwc flipped": with_cuda_options(base, prefer_nhwc="0" if nhwc == "1" else "1"),
        "hand: float16 converter + prefer_nhwc + CUDA graph (raw file)": hand_settings,
    }
    paths = {label: hand if label.startswith("hand") else engine for label in variants}
    for label in list(variants):  # an option this onnxruntime does not know is reported, not fatal
        try:
            engine_session(paths[label], variants[label])
        except Exception as error:  # noqa: BLE001
            print(f"{label}: not opened ({str(error).splitlines()[0][:160]})")
            del variants[label]
    runners = {label: (OrtGraphRunner if s.get("cuda_graph") else OrtDeviceRunner)(
        lambda p=paths[label], s=s: engine_session(p, s), label) for label, s in variants.items()}
    timed = compare(runners, {label: {args.batch: feed} for label in runners}, TIMING)
    first = timed[next(iter(timed))][f"b{args.batch}"]["p50"]
    print(f"\n| session (onnxruntime {ort.__version__}) | p50 ms at b{args.batch} | vs as shipped |\n|---|---|---|")
    for label, per in timed.items():
        p50 = per[f"b{args.batch}"]["p50"]
        print(f"| {label} | {p50:.3f} | {first / p50:.2f}x |")


if __name__ == "__main__":
    main()
