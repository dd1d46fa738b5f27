"""Big models: the compiler against the peer cleaners on the same file, peak memory and time.

    python benchmarks/large_model.py [--width 8192 15360] [--fp16] [--no-peers] [--keep DIR]

Builds a chain of Gemm + Relu layers with onnx.helper (9 x 8192^2 fp32 = 2.25 GiB, 9 x 15360^2 = 7.9 GiB),
saved with external data, and compiles each through `recipe=onnx_file` in a process of its own (exit, wall
time, the report's import + surgery seconds, peak RSS read by that process). On the same file, in the same run:
onnxslim, `polygraphy surgeon sanitize --fold-constants`, and onnxruntime's offline optimization
(`optimized_model_filepath`), each in its own process. Prints one table.
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
    """Write the model with each weight streamed into its .data file as it is drawn (one layer in memory)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    data = path.with_name(path.name + ".data")
    nodes, weights, previous = [], [], "x"
    with open(data, "wb") as f:
        def external(name: str, array: np.ndarray) -> TensorProto:
            offset = f.seek(0, 2)
            f.write(b"\0" * (-offset % 4096))
            offset += -offset % 4096
            f.write(array.tobytes())
            tensor = TensorProto(name=name, dims=list(array.shape), data_type=TensorProto.FLOAT,
                                 data_location=TensorProto.EXTERNAL)
            for key, value in (("location", data.name), ("offset", str(offset)), ("length", str(array.nbytes))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            return tensor

        for i in range(layers):
            w = rng.standard_normal((width, width), dtype=np.float32)
            w /= np.sqrt(width)
            weights += [external(f"w{i}", w), external(f"b{i}", np.zeros(width, np.float32))]
            del w
            out = "y" if i == layers - 1 else f"h{i}"
            nodes.append(helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [f"g{i}" if out != "y" else "y"]))
            if out != "y":
                nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
            previous = out
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], weights)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


PEERS = {  # each cleans the same file into out/, in a process of its own (its peak RSS is its own)
    "onnxslim": "import onnxslim; onnxslim.slim(SRC, output_model=OUT)",
    "polygraphy sanitize --fold-constants": (
        "import subprocess; RC = subprocess.call(['polygraphy', 'surgeon', 'sanitize', SRC, '--fold-constants',"
        " '-o', OUT, '--save-external-data', 'peer.onnx.data'])"),
    "onnxruntime offline (optimized_model_filepath)": (
        "import onnxruntime as ort; o = ort.SessionOptions(); o.optimized_model_filepath = OUT;"
        " o.add_session_config_entry('session.optimized_model_external_initializers_file_name', 'peer.onnx.data');"
        " o.add_session_config_entry('session.optimized_model_external_initializers_min_size_in_bytes', '1024');"
        " ort.InferenceSession(SRC, o, providers=['CPUExecutionProvider'])"),
}
# peers that load the whole model into memory get an address-space limit below the machine's RAM: at 5x the
# model (onnxslim on the small one) they would take the machine down with them
IN_MEMORY_PEERS = ("onnxslim", "polygraphy sanitize --fold-constants")
MEMORY_LIMIT = 20 << 30
# the peer's own peak RSS, read by the process itself: VmHWM, its own image's high-water mark (ru_maxrss keeps
# what the forking parent had before exec), and the largest of its children
_WRAP = ("import resource, sys, time; SRC, OUT = sys.argv[1], sys.argv[2]; t = time.perf_counter()\n{code}\n"
         "print('PEAK', int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024, "
         "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, time.perf_counter() - t)\n"
         "sys.exit(globals().get('RC', 0))")


def peer(name: str, model: Path, work: Path) -> dict:
    out = work / "peer" / "peer.onnx"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    limit = MEMORY_LIMIT if name in IN_MEMORY_PEERS else None  # a peer that runs out is reported, not the machine
    proc = subprocess.run([sys.executable, "-c", _WRAP.format(code=PEERS[name]), str(model), str(out)],
                          capture_output=True, text=True,
                          preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))) if limit else None)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("PEAK")), None)
    shutil.rmtree(out.parent, ignore_errors=True)
    if proc.returncode or line is None:
        return {"name": name, "exit": proc.returncode, "seconds": None, "peak": None,
                "error": " ".join((proc.stderr or proc.stdout).split())[-200:]}
    own, children, seconds = line.split()[1:]
    return {"name": name, "exit": 0, "seconds": float(seconds), "peak": max(int(own), int(children))}


def compile_once(model: Path, work: Path, *extra: str) -> dict:
    """The compiler through onnx_file in a process of its own: exit, wall time, peak RSS, cleaning time. The peak
    is the child's own high-water mark from wait4 (the compiler ends with os._exit, after its exit handlers, so
    it prints nothing after its run)."""
    import json

    shutil.rmtree(work / "cache", ignore_errors=True)
    shutil.rmtree(work / "run", ignore_errors=True)
    env = {**os.environ, "COMPILER_CACHE_DIR": str(work / "cache")}
    cmd = [sys.executable, "-m", "compiler", "recipe=onnx_file", f"model.path={model}",
           f"hydra.run.dir={work / 'run'}", "++model.dims.batch=[1,2,4]", "verify.samples=4",
           "verify.latency.iterations=3", "verify.latency.warmup=1", "verify.latency.batch_sizes=[1,4]", *extra]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as output:
        proc = subprocess.Popen(cmd, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read()
    try:
        report = json.loads((work / "run" / "report.json").read_text())
        stages = {name: s["seconds"] for name, s in report["stages"].items()}
    except (OSError, ValueError, KeyError):
        stages = {}
    if proc.returncode != 0:
        print(text[-3000:])
    return {"exit": proc.returncode, "seconds": seconds, "peak": usage.ru_maxrss * 1024,
            "cleaning": stages.get("export", 0) + stages.get("surgery", 0) if stages else None, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--width", type=int, nargs="+", default=[8192, 15360],
                        help="one model per width: 9 x 8192^2 fp32 = 2.25 GiB, 9 x 15360^2 = 7.9 GiB")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--fp16", action="store_true", help="also compile each model with engine.precision=fp16")
    parser.add_argument("--keep", type=Path, help="keep the models and run dirs here")
    args = parser.parse_args()
    rows = []
    for width in args.width:
        work = (args.keep or Path(tempfile.mkdtemp(prefix="large-model-"))) / f"w{width}"
        work.mkdir(parents=True, exist_ok=True)
        model = work / "large.onnx"
        started = time.perf_counter()
        size = build(model, args.layers, width) if not model.exists() else \
            sum(f.stat().st_size for f in work.glob("large.onnx*"))
        print(f"built {model} ({size / 2**30:.2f} GiB with its .data file) in {time.perf_counter() - started:.0f} s",
              flush=True)
        # with the cache on, each of 3 artifacts lives in the cache and in the run dir (a copy without reflinks)
        cache_off = size * 7 > shutil.disk_usage(work).free
        extra, label = (["cache.enabled=false"], ", cache off: disk") if cache_off else ([], "")
        runs = [(f"compiler (onnx_file, fp32{label})", compile_once(model, work, *extra))]
        if args.fp16:
            runs.append((f"compiler (onnx_file, fp16{label})",
                         compile_once(model, work, "engine.precision=fp16", *extra)))
        shutil.rmtree(work / "cache", ignore_errors=True)
        shutil.rmtree(work / "run", ignore_errors=True)
        for name, r in runs:
            rows.append((size, name, r["exit"], r["seconds"], r["cleaning"], r["peak"]))
            print(f"  {name}: exit {r['exit']}, {r['seconds']:.0f} s, stages {r['stages']}", flush=True)
        for name in ([] if args.no_peers else PEERS):
            r = peer(name, model, work)
            rows.append((size, name, r["exit"], r["seconds"], r["seconds"], r["peak"]))
            print(f"  {name}: {r}", flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n| model | tool | exit | wall s | cleaning s (import + surgery) | peak RSS | peak RSS / model |")
    print("|---|---|---|---|---|---|---|")
    for size, name, code, seconds, cleaning, peak in rows:
        fmt = (lambda v: f"{v:.1f}" if v is not None else "-")
        print(f"| {size / 2**30:.2f} GiB | {name} | {code} | {fmt(seconds)} | {fmt(cleaning)} | "
              f"{peak / 2**30:.2f} GiB | {peak / size:.2f}x |" if peak else
              f"| {size / 2**30:.2f} GiB | {name} | {code} | - | - | - | - |")


if __name__ == "__main__":
    main()
