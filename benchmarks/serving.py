"""Serving a compiled run through Triton (the twin config: the engine on Triton's Python backend with onnxruntime)
against the engine in-process: throughput and p50/p99 per request at concurrency 1, 8 and 32, dynamic batching on
and off, through tritonclient (HTTP); in-process onnxruntime at batch sizes 1, 8 and 32, the most a batcher can
merge at that concurrency. Needs the serve extra.

    python -m compiler recipe=cnn_torch serve.target=triton hydra.run.dir=/tmp/cnn
    python benchmarks/serving.py /tmp/cnn [--requests 800]

The ratio column: the server's requests per second over in-process onnxruntime's samples per second at the batch
size equal to the concurrency (1.0: serving costs nothing over calling the engine with a full batch).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONCURRENCY = (1, 8, 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--requests", type=int, default=800, help="requests per concurrency level")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    from compiler.backends.onnxruntime import engine_session, read_runtime
    from compiler.serve.command import sample_request

    report = json.loads((args.run_dir / "report.json").read_text())
    served = report.get("serving") or sys.exit("the run has no Triton repository: compile with serve.target=triton")
    name, batched = served["model_name"], served["max_batch_size"] > 0
    engine = args.run_dir / report["stages"]["build"]["artifact"]
    one = _feed(sample_request(args.run_dir / "triton" / name))
    rows = []
    session = engine_session(engine, read_runtime(engine))
    for batch in CONCURRENCY if batched else (1,):
        feed = {k: np.repeat(v, batch, axis=0) for k, v in one.items()} if batched else one
        rows.append(_in_process(session, feed, batch, args.requests))
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(names, one)))
    for dynamic in (True, False) if batched else (False,):
        with tempfile.TemporaryDirectory() as tmp:
            repository = _repository(args.run_dir / "triton", Path(tmp), name, dynamic)
            for concurrency in CONCURRENCY:
                rows.append(_served(repository, name, one, expected, concurrency, args.requests, dynamic))
    _table(rows, batched)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


def _feed(request: dict) -> dict:
    from tritonclient.utils import triton_to_np_dtype

    return {item["name"]: np.asarray(item["data"], dtype=triton_to_np_dtype(item["datatype"])).reshape(item["shape"])
            for item in request["inputs"]}


def _repository(source: Path, into: Path, name: str, dynamic: bool) -> Path:
    """A copy of the run's repository whose twin config has dynamic batching on or off."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    from compiler.serve.triton_config import TWIN_CONFIG, to_text

    repository = into / "triton"
    shutil.copytree(source, repository)
    path = repository / name / "configs" / f"{TWIN_CONFIG}.pbtxt"
    config = text_format.Parse(path.read_text(), pb.ModelConfig())
    if not dynamic:
        config.ClearField("dynamic_batching")
    elif not config.HasField("dynamic_batching"):
        config.dynamic_batching.max_queue_delay_microseconds = 100
    path.write_text(to_text(config))
    return repository


def _in_process(session, feed: dict, batch: int, requests: int) -> dict:
    names = [o.name for o in session.get_outputs()]
    for _ in range(5):
        session.run(names, feed)
    times = []
    deadline = time.perf_counter() + 10
    while len(times) < max(20, requests // batch) and time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(names, feed)
        times.append(time.perf_counter() - start)
    p50 = float(np.percentile(times, 50))
    return {"what": "in-process onnxruntime", "batch_or_concurrency": batch, "p50_ms": p50 * 1e3,
            "p99_ms": float(np.percentile(times, 99)) * 1e3, "per_s": batch / p50}


def _served(repository: Path, name: str, one: dict, expected: dict, concurrency: int, requests: int,
            dynamic: bool) -> dict:
    """Requests per second and latency at `concurrency`; the first answer must equal the engine's in-process one, so
    that no row times answers that carry no data."""
    import tritonclient.http as http

    from compiler.serve.server import load, running
    from compiler.serve.triton_config import TWIN_CONFIG

    with running(repository, [], TWIN_CONFIG) as server:
        loaded, message = load(server, name)
        if not loaded:
            sys.exit(f"{name} did not load: {message}")
        local = threading.local()

        def send(_: int) -> float:
            if not hasattr(local, "client"):
                local.client = http.InferenceServerClient(server.http, concurrency=1)
                local.inputs = _inputs(one)
            start = time.perf_counter()
            local.client.infer(name, local.inputs)
            return time.perf_counter() - start

        _check_answer(http.InferenceServerClient(server.http), name, one, expected)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(send, range(concurrency * 4)))   # warm every connection
            before = _executions(server, name)
            started = time.perf_counter()
            times = list(pool.map(send, range(requests)))
            wall = time.perf_counter() - started
        after = _executions(server, name)
        calls = sum(after.values()) - sum(before.values())
        executions = sum(size * (count - before.get(size, 0)) for size, count in after.items())
    return {"what": f"Triton, dynamic batching {'on' if dynamic else 'off'}", "batch_or_concurrency": concurrency,
            "p50_ms": float(np.percentile(times, 50)) * 1e3, "p99_ms": float(np.percentile(times, 99)) * 1e3,
            "per_s": requests / wall, "mean_batch": executions / max(calls, 1)}


def _inputs(feed: dict) -> list:
    """The request's tensors for tritonclient's HTTP client."""
    import tritonclient.http as http

    inputs = []
    for key, value in feed.items():
        tensor = http.InferInput(key, list(value.shape), _datatype(value))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def _check_answer(client, name: str, one: dict, expected: dict) -> None:
    result = client.infer(name, _inputs(one))
    for key, want in expected.items():
        got = result.as_numpy(key)
        if got is None or got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-4):
            sys.exit(f"{name}: the server's {key} is not the engine's (got "
                     f"{None if got is None else got.shape}, want {want.shape}): no timing of such answers")


def _executions(server, name: str) -> dict[int, int]:
    """{batch size: executions so far} from the server's statistics."""
    import tritonclient.http as http

    stats = http.InferenceServerClient(server.http).get_inference_statistics(name)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def _datatype(value: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(value.dtype)


def _table(rows: list[dict], batched: bool) -> None:
    base = {r["batch_or_concurrency"]: r["per_s"] for r in rows if r["what"] == "in-process onnxruntime"}
    print(f"{'':36} {'batch/conc':>10} {'p50 ms':>9} {'p99 ms':>9} {'per s':>10} {'mean batch':>10} {'x in-proc':>9}")
    for r in rows:
        reference = base.get(r["batch_or_concurrency"] if batched else 1)
        ratio = f"{r['per_s'] / reference:.2f}" if reference else "-"
        mean = f"{r['mean_batch']:.1f}" if "mean_batch" in r else "-"
        print(f"{r['what']:36} {r['batch_or_concurrency']:>10} {r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} "
              f"{r['per_s']:>10.0f} {mean:>10} {ratio:>9}")


if __name__ == "__main__":
    main()
