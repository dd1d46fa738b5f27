"""`python -m compiler serve RUN_DIR`: the run's Triton repository in a local server on 127.0.0.1, for a try.

The bundled server has the Python backend only, so by default each model loads its twin config (the engine through
onnxruntime with its runtime settings); `--config config` loads config.pbtxt, which needs a server with the
engine's real backend (NVIDIA's Triton container: README, "Serving"). Prints the endpoints and a curl line; Ctrl-C
stops the server.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

from compiler.serve.server import ServerError, load, start
from compiler.serve.triton_config import TWIN_CONFIG, WARMUP_FOLDER


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m compiler serve", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder compiled with serve.target=triton")
    parser.add_argument("--config", default=TWIN_CONFIG,
                        help=f"configs/<name>.pbtxt to load (default {TWIN_CONFIG}); 'config' for config.pbtxt")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server to start")
    args = parser.parse_args(argv)
    repository = args.run_dir / "triton"
    models = sorted(d.name for d in repository.iterdir() if (d / "config.pbtxt").is_file()) \
        if repository.is_dir() else []
    if not models:
        print(f"compiler: serve: {args.run_dir} holds no Triton repository (triton/<model>/config.pbtxt). "
              "Fix: compile with serve.target=triton", file=sys.stderr)
        return 2
    try:
        server = start(repository, [], None if args.config == "config" else args.config, args.timeout)
    except ServerError as exc:
        print(f"compiler: serve: {exc}", file=sys.stderr)
        return 1
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        for model in models:
            loaded, message = load(server, model)
            if not loaded:
                print(f"compiler: serve: model '{model}' did not load: {message.strip()}", file=sys.stderr)
                return 1
        print(f"Triton (PID {server.pid}) serves {', '.join(models)} from {repository}")
        print(f"  HTTP  http://{server.http}   (KServe v2: /v2/models/{models[0]}, /v2/health/ready)")
        print(f"  gRPC  {server.grpc}")
        request = server.workdir / "request.json"
        request.write_text(json.dumps(sample_request(repository / models[0])))
        print(f"  try:  curl -s -X POST http://{server.http}/v2/models/{models[0]}/infer -d @{request}")
        print("Ctrl-C stops it.", flush=True)
        while not stop and server.process.poll() is None:
            time.sleep(0.2)
        return 0 if stop else 1
    finally:
        server.stop()
        print("compiler: serve: stopped")


def sample_request(model_dir: Path) -> dict:
    """A KServe v2 JSON request at the config's first warm-up shapes (its data files where it has them, else zeros):
    one batch of one."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), pb.ModelConfig())
    warm = config.model_warmup[0].inputs if config.model_warmup else {}
    inputs = []
    for spec in config.input:
        dims = list(warm[spec.name].dims) if spec.name in warm else [max(d, 1) for d in spec.dims]
        shape = ([1] if config.max_batch_size else []) + dims
        kind = pb.DataType.Name(spec.data_type)
        data_file = warm[spec.name].input_data_file if spec.name in warm else ""
        if kind == "TYPE_STRING":
            raw = (model_dir / WARMUP_FOLDER / data_file).read_bytes() if data_file else b""
            values, at = [], 0
            while at < len(raw) and len(values) < int(np.prod(shape)):
                size = int.from_bytes(raw[at:at + 4], "little")
                values.append(raw[at + 4:at + 4 + size].decode())
                at += 4 + size
            values += [""] * (int(np.prod(shape)) - len(values))
        else:
            from tritonclient.utils import triton_to_np_dtype

            dtype = np.dtype(triton_to_np_dtype(kind.removeprefix("TYPE_")))
            array = np.frombuffer((model_dir / WARMUP_FOLDER / data_file).read_bytes(), dtype) if data_file \
                else np.zeros(int(np.prod(shape)), dtype)
            values = array.reshape(-1)[:int(np.prod(shape))].tolist()
        inputs.append({"name": spec.name, "shape": shape, "datatype": kind.removeprefix("TYPE_").replace("STRING", "BYTES"),
                       "data": values})
    return {"inputs": inputs}
