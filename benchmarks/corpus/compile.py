"""Compiles every file of the foreign-model corpus through `recipe=onnx_file`, and compares the cleaned
graphs with onnxsim and onnxslim.

    python benchmarks/corpus/build.py /tmp/corpus [--torchvision-python ...]   # first
    python benchmarks/corpus/compile.py /tmp/corpus [--jobs 2] [--only bert]

For each file: does plain onnxruntime load it; the compiler's exit code, time and (when it fails) its
one-line reason; node counts of the raw file, model.clean.onnx, onnxsim and onnxslim; and the largest
output difference between model.clean.onnx and the original (the ledger's model.onnx -> model.clean.onnx
rows, at the min/opt/max shapes); and whether each peer's outputs equal the original's (1e-5) at the shapes the
compiler verified, since a peer that changes an output does not count against the compiler's node count.
Needs the `peers` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PEERS = r"""
import io, json, sys, contextlib, warnings
warnings.filterwarnings("ignore")
import numpy as np
import onnx
import onnxruntime as ort
path, shapes, result = sys.argv[1], json.loads(sys.argv[2]), {}


def feeds(model):
    # the compiler's verified shapes; values: normal floats, integer zeros (an index 0 is valid), False
    rng, out, weights = np.random.default_rng(0), {}, {i.name for i in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in shapes or value.name in weights:  # an old IR's weights listed as inputs too
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = shapes[value.name]
        out[value.name] = (rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                           else np.zeros(shape, dtype))
    return out


def run(model, feed):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return dict(zip([o.name for o in session.get_outputs()],
                    session.run(None, {k: v for k, v in feed.items() if k in names})))


def differs(expected, got):
    # how an output differs, or None: tensors within 1e-5 (exactly, for integers and strings); others (a ZipMap's
    # list of dicts) equal
    if not isinstance(expected, np.ndarray):
        return None if expected == got else "not equal"
    if not isinstance(got, np.ndarray) or expected.shape != got.shape:
        return f"shape {tuple(expected.shape)} -> {tuple(np.shape(got))}"
    if expected.dtype.kind in "fc":
        worst = float(np.max(np.abs(expected.astype(np.float64) - got))) if expected.size else 0.0
        return f"max abs {worst:.1e}" if worst > 1e-5 else None
    return None if np.array_equal(expected, got) else "values differ"


original = onnx.load(path)
try:
    feed = feeds(original)
    expected = run(original, feed) if shapes else None
except Exception:
    expected = None
for tool in ("onnxsim", "onnxslim"):
    try:
        model = onnx.load(path)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if tool == "onnxsim":
                import onnxsim
                out, ok = onnxsim.simplify(model)
                if not ok:
                    raise RuntimeError("check failed")
            else:
                import onnxslim
                out = onnxslim.slim(model)
        result[tool] = len(out.graph.node)
    except BaseException as exc:
        result[tool] = "failed: " + type(exc).__name__
        continue
    # do the peer's outputs hold, at the shapes the compiler verified? (1e-5, as the compiler's own clean model)
    if expected is None:
        result[tool + "_outputs"] = "not checked"
        continue
    try:
        got = run(out, feed)
        bad = [f"{k}: missing" if k not in got else f"{k}: {differs(v, got[k])}" for k, v in expected.items()
               if k not in got or differs(v, got[k])]
        result[tool + "_outputs"] = "; ".join(bad) or "hold"
    except Exception as exc:
        result[tool + "_outputs"] = f"failed to run: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
print(json.dumps(result))
"""


def ort_loads(path: Path) -> bool:
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return True
    except Exception:
        return False


def compile_one(path: Path, work: Path) -> dict:
    run_dir = work / path.stem
    env = {**os.environ, "COMPILER_CACHE_DIR": str(work / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "compiler", "recipe=onnx_file", f"model.path={path}", f"hydra.run.dir={run_dir}",
           "verify.latency.iterations=5", "verify.latency.warmup=1", "verify.latency.batch_sizes=[1]"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    row = {"code": proc.returncode, "seconds": time.perf_counter() - start,
           "traceback": "Traceback" in proc.stdout + proc.stderr}
    errors = [line for line in proc.stderr.splitlines() if line.startswith("compiler: ") and "note:" not in line]
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or [f"exit {proc.returncode}, no message"]
    row["reason"] = (errors[0].removeprefix("compiler: ") if errors else last[0])[:160] if proc.returncode else ""
    row["message_lines"] = len(errors)
    if proc.returncode in (1, 2) and "the recipe is invalid" in row["reason"]:
        detail = [line.strip() for line in proc.stderr.splitlines() if line.strip().startswith("- ")]
        row["reason"] = (detail[0][2:] if detail else row["reason"])[:160]
    report = run_dir / "report.json"
    if report.is_file():
        r = json.loads(report.read_text())
        row["raw_nodes"] = r["metrics"]["onnx_nodes"]["export"]
        row["clean_nodes"] = r["metrics"]["onnx_nodes"]["clean"]
        cleaned = [x["max_abs_error"] for x in r["ledger"] if x["candidate"] == "model.clean.onnx"]
        verified = r.get("verified_shapes") or {}
        row["shapes"] = next(iter(verified.values())) if verified else {}
        row["clean_diff"] = max(cleaned) if cleaned else None
        if proc.returncode == 3:
            failed = [g for g in r["gates"] if not g["passed"]]
            row["reason"] = f"gate {failed[0]['name']}: {failed[0]['detail']}" if failed else row["reason"]
    return row


def peers(path: Path, shapes: dict) -> dict:
    """Node counts of onnxsim's and onnxslim's output, and whether their outputs hold at the compiler's verified
    shapes: a peer that changes an output does not count against the compiler's node count."""
    try:
        proc = subprocess.run([sys.executable, "-c", PEERS, str(path), json.dumps(shapes)], capture_output=True,
                              text=True, timeout=600)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception as exc:
        return {"onnxsim": f"failed: {type(exc).__name__}", "onnxslim": f"failed: {type(exc).__name__}"}


PEER_TOOLS = ("onnxsim", "onnxslim")


def _holds(row: dict, tool: str) -> bool:
    """The peer's outputs equal the original's at the compiler's verified shapes, or could not be checked
    (results from before the check, inputs the generated values do not fit)."""
    return row.get(tool + "_outputs", "hold") in ("hold", "not checked")


def _at_most_peers(row: dict) -> bool:
    counts = [row[t] for t in PEER_TOOLS if isinstance(row.get(t), int) and _holds(row, t)]
    return row.get("clean_nodes") is not None and (not counts or row["clean_nodes"] <= min(counts))


def _peer_cell(row: dict, tool: str) -> str:
    value = row.get(tool, "-")
    return f"{value} (outputs differ: {row[tool + '_outputs']})" if isinstance(value, int) and not _holds(row, tool) \
        else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only")
    parser.add_argument("--part", type=int, choices=(1, 2, 3), help="only the first part's files, the second's (kinds.py) or the third's (kinds_three.py)")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="recompile files already in CORPUS/results.jsonl")
    args = parser.parse_args()
    entries = [e for e in json.loads((args.corpus / "manifest.json").read_text()) if "error" not in e]
    if args.only:
        entries = [e for e in entries if args.only in e["file"]]
    if args.part:
        entries = [e for e in entries if e.get("part", 1) == args.part]
    work = Path(tempfile.mkdtemp(prefix="corpus-"))
    results = args.corpus / "results.jsonl"
    if args.fresh and results.exists():
        results.unlink()
    done = {json.loads(line)["file"]: json.loads(line) for line in results.open()} if results.exists() else {}

    def one(entry: dict) -> dict:
        if entry["file"] in done:
            return done[entry["file"]]
        path = args.corpus / entry["file"]
        row = {**entry, "loads": ort_loads(path), **compile_one(path, work)}
        if not args.no_peers and row["loads"]:
            row.update(peers(path, row.get("shapes") or {}))
        with results.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        return row

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, entries))
    print(f"\n| file | source | ORT loads | exit | s | raw nodes | clean | onnxsim | onnxslim | clean ≤ min(peers) | "
          "clean vs raw max abs | reason |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        both = all(isinstance(r.get(t), int) for t in PEER_TOOLS)
        leq = ("yes" if _at_most_peers(r) else "NO") if both else "-"
        diff = f"{r['clean_diff']:.1e}" if r.get("clean_diff") is not None else "-"
        print(f"| {r['file']} | {r['source']} | {'yes' if r['loads'] else 'no'} | {r['code']} | {r['seconds']:.0f} | "
              f"{r.get('raw_nodes', '-')} | {r.get('clean_nodes', '-')} | {_peer_cell(r, 'onnxsim')} | "
              f"{_peer_cell(r, 'onnxslim')} | {leq} | {diff} | {r['reason'] or ''} |")
    loads = [r for r in rows if r["loads"]]
    ok = [r for r in loads if r["code"] == 0]
    three = [r for r in loads if r["code"] == 3]
    refused = [r for r in rows if not r["loads"]]
    clean_refusals = [r for r in refused if r["code"] in (1, 2) and not r["traceback"]]
    compared = [r for r in rows if all(isinstance(r.get(t), int) for t in ("onnxsim", "onnxslim"))]
    leq = [r for r in compared if _at_most_peers(r)]
    wrong = [(r["file"], t) for r in compared for t in PEER_TOOLS if not _holds(r, t)]
    close = [r for r in compared if r.get("clean_diff") is not None and r["clean_diff"] <= 1e-5]
    print(f"\n{len(rows)} files from {len({r['source'].split(' (')[0] for r in rows})} sources. onnxruntime loads "
          f"{len(loads)}: exit 0 {len(ok)}, exit 3 {len(three)}, other {len(loads) - len(ok) - len(three)}. "
          f"It cannot load {len(refused)}: {len(clean_refusals)} exit 1/2 with a one-line reason and no traceback. "
          f"Tracebacks anywhere: {sum(r['traceback'] for r in rows)}.")
    print(f"Both peers processed {len(compared)}: clean ≤ min(onnxsim, onnxslim) on {len(leq)} (a peer whose outputs "
          f"differ from the original's does not count: {len(wrong)} such outputs{': ' if wrong else ''}"
          f"{', '.join(f'{t} on {f}' for f, t in wrong)}), clean within 1e-5 of the original on {len(close)}.")


if __name__ == "__main__":
    main()
