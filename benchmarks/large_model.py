"""A model over 2 GB (weights in a .data file beside it) compiled end to end through `recipe=onnx_file`.

    python benchmarks/large_model.py [--layers 9] [--width 8192] [--keep DIR]

Builds a chain of Gemm + Relu layers with onnx.helper (9 x 8192 x 8192 fp32 = 2.25 GiB of weights),
saves it with external data, then runs the compiler on it in a subprocess and reports wall time and the
compiler's peak resident memory (ru_maxrss of the child) against the model's size.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(path: Path, layers: int, width: int) -> int:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
        weights += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [f"g{i}" if out != "y" else "y"]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        previous = out
        del w
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--keep", type=Path, help="keep the model and run dir here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="large-model-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "large.onnx"
    started = time.perf_counter()
    size = build(model, args.layers, args.width)
    print(f"built {model} ({size / 2**30:.2f} GiB with its .data file) in {time.perf_counter() - started:.0f} s",
          flush=True)
    env = {**os.environ, "COMPILER_CACHE_DIR": str(work / "cache")}
    cmd = [sys.executable, "-m", "compiler", "recipe=onnx_file", f"model.path={model}", f"hydra.run.dir={work / 'run'}",
           "++model.dims.batch=[1,2,4]", "verify.samples=4", "verify.latency.iterations=3", "verify.latency.warmup=1",
           "verify.latency.batch_sizes=[1,4]"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    print(proc.stdout[-1500:], proc.stderr[-1500:], sep="\n")
    print("| model (weights) | exit | wall s | compiler peak RSS | peak RSS / model size |")
    print("|---|---|---|---|---|")
    print(f"| {size / 2**30:.2f} GiB | {proc.returncode} | {seconds:.0f} | {peak / 2**30:.2f} GiB | {peak / size:.2f}x |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
