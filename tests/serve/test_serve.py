"""serve.target=triton: the model config made from the IO spec and the EnginePlan, checked by a real Triton server
(nvidia-pytriton's, Python backend only) on 127.0.0.1: the real config passes the server's checks up to the missing
onnxruntime backend, and the twin config serves the same engine file with outputs equal to the engine's."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY, recipe_cfg

server = pytest.importorskip("compiler.serve.server")
pytest.importorskip("tritonclient.http", reason="the serve extra (pip install -e '.[serve]')")
pytest.importorskip("pytriton", reason="the serve extra (pip install -e '.[serve]')")

MISSING_BACKEND = "unable to find backend library for backend 'onnxruntime'"


# --- lint: every bad serve setting exits 2 with its key ------------------------------------------------------

def _lint(recipe: str, *overrides: str) -> list[str]:
    from compiler.cli import lint_problems

    return [str(p) for p in lint_problems(recipe_cfg(recipe, *overrides))]


@pytest.mark.parametrize("override, key, words", [
    ("serve.max_batch_size=-1", "serve.max_batch_size", "not a batch size"),
    ("serve.max_batch_size=lots", "serve.max_batch_size", "not a batch size"),
    ("serve.max_batch_size=65", "serve.max_batch_size", "above the engine's largest batch (model.dims.batch max 64)"),
    ("serve.dynamic_batching.max_queue_delay_us=-5", "serve.dynamic_batching.max_queue_delay_us", "must be >= 0"),
    ("serve.dynamic_batching.preferred_batch_sizes=[0]", "serve.dynamic_batching.preferred_batch_sizes", "not batch"),
    ("serve.dynamic_batching.preferred_batch_sizes=[8,128]", "serve.dynamic_batching.preferred_batch_sizes",
     "above max_batch_size (64)"),
    (("serve.dynamic_batching.enabled=false", "serve.dynamic_batching.preferred_batch_sizes=[4]"),
     "serve.dynamic_batching.preferred_batch_sizes", "set with dynamic batching off"),
    ("serve.instances=0", "serve.instances", "not an instance count"),
    ("serve.instances=many", "serve.instances", "not an instance count"),
    ("serve.versions=0", "serve.versions", "not a version count"),
    ("serve.model_name='my model'", "serve.model_name", "not a name Triton loads"),
    ("serve.model_name=.hidden", "serve.model_name", "not a name Triton loads"),
    ("engine.onnxruntime.format=ort", "engine.onnxruntime.format", "loads ONNX files only"),
    ("engine.backend=tensorrt_rtx", "engine.backend", "Triton has no TensorRT-RTX backend"),
    ("engine.onnxruntime.custom_op_libraries=[/x/libcustom.so]", "engine.onnxruntime.custom_op_libraries",
     "cannot register a custom-op library"),
    ("model.inputs=[{name: input, shape: [batch, 1, 28, 28], dtype: bfloat16}]", "model.inputs[0].dtype",
     "takes no bf16 inputs"),
    ("model.dims.batch=[2,8,16]", "serve.max_batch_size", None),  # fine with auto: 0 and a note (below)
])
def test_every_bad_serve_setting_is_a_lint_problem_naming_its_key(override: str | tuple, key: str,
                                                                  words: str | None):
    problems = _lint("cnn_torch", "serve.target=triton", *(override if isinstance(override, tuple) else (override,)))
    if words is None:
        assert not [p for p in problems if p.startswith("serve.")]
        return
    mine = [p for p in problems if p.startswith(key + ":")]
    assert any(words in p and "Fix:" in p for p in mine), problems


def test_an_explicit_batch_size_the_engine_cannot_take_is_refused():
    assert any(p.startswith("serve.max_batch_size:") and "takes no batch below 2" in p
               for p in _lint("cnn_torch", "serve.target=triton", "model.dims.batch=[2,8,16]", "serve.max_batch_size=8"))
    fixed_batch = ["serve.max_batch_size=4", "model.inputs=[{name: image, shape: [1, 1, 16, 16]}]"]
    assert any(p.startswith("serve.max_batch_size:") and "do not all start with one named dim" in p
               for p in _lint("two_head_torch", "serve.target=triton", *fixed_batch))


def test_bad_settings_are_checked_with_target_none_too():
    assert any(p.startswith("serve.instances:") for p in _lint("cnn_torch", "serve.instances=-2"))
    assert not [p for p in _lint("cnn_torch") if p.startswith("serve")]


def test_the_cli_exits_2_before_any_work(compile_cli, tmp_path: Path):
    run = compile_cli("recipe=cnn_torch", "serve.target=triton", "serve.max_batch_size=100")
    assert run.code == 2, run.output
    assert "serve.max_batch_size: above the engine's largest batch (model.dims.batch max 64); got 100" in run.output
    assert not run.run_dir.exists()


# --- the config: one mapping from the spec and the plan -------------------------------------------------------

def test_an_onnxruntime_cuda_engine_maps_to_the_backends_accelerators_and_graph_level():
    from compiler.iospec import IOSpec
    from compiler.serve import triton_config as tc
    from compiler.serve.settings import resolve

    cfg = recipe_cfg("bert_torch", "serve.target=triton", "serve.instances=2",
                     "serve.dynamic_batching.preferred_batch_sizes=[16,32]")
    io = IOSpec.from_cfg(cfg)

    class Plan:
        backend, gpu = "onnxruntime", True

    settings = resolve(cfg.serve, io, Plan, "bert torch/v2")
    assert (settings.name, settings.max_batch_size, settings.batch_range) == ("bert_torch_v2", 32, (1, 16, 32))
    runtime = {"session": {"graph_optimization_level": "extended", "intra_op_num_threads": 4, "inter_op_num_threads": 1,
                           "disabled_optimizers": []},
               "providers": [["TensorrtExecutionProvider", {"trt_fp16_enable": "1"}],
                             ["CUDAExecutionProvider", {"use_tf32": "0", "prefer_nhwc": "1", "device_id": "0"}],
                             ["CPUExecutionProvider", {}]]}
    facts = [tc.TensorFacts("input_ids", "TYPE_INT64", (-1, -1)), tc.TensorFacts("attention_mask", "TYPE_INT64", (-1, -1))]
    config = tc.model_config(settings, io, Plan, runtime, facts, [tc.TensorFacts("logits", "TYPE_FP32", (-1, 2))])
    text = tc.to_text(config)
    assert 'platform: "onnxruntime_onnx"' in text and "max_batch_size: 32" in text
    assert [list(i.dims) for i in config.input] == [[-1], [-1]] and list(config.output[0].dims) == [2]
    assert list(config.dynamic_batching.preferred_batch_size) == [16, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert (config.instance_group[0].kind, config.instance_group[0].count) == (1, 2)  # KIND_GPU
    assert config.optimization.graph.level == 1
    trt, cuda = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (trt.name, cuda.name) == ("tensorrt", "cuda")
    assert dict(cuda.parameters) == {"use_tf32": "0", "prefer_nhwc": "1"}
    assert trt.parameters["precision_mode"] == "FP16"
    assert trt.parameters["trt_profile_min_shapes"] == ("input_ids:1x8,attention_mask:1x8,"
                                                        "input_ids:1x64,attention_mask:1x64")
    assert trt.parameters["trt_profile_max_shapes"] == ("input_ids:32x64,attention_mask:32x64,"
                                                        "input_ids:32x128,attention_mask:32x128")
    assert config.parameters["intra_op_thread_count"].string_value == "4"
    assert [(w.name, w.batch_size) for w in config.model_warmup] == [("batch_1", 1), ("batch_32", 32)]
    assert all(v.input_data_file for w in config.model_warmup for v in w.inputs.values())  # int inputs: in range
    data = tc.warmup_data(settings, io)
    ids = np.frombuffer(data["batch_32__input_ids"], np.int64)
    assert ids.size == 32 and 0 <= ids.min() and ids.max() < 128      # one sample of opt seq 32, inside [0, 128)
    twin = tc.twin_config(config, "model.onnx", "model.opt.runtime.json")
    assert (twin.backend, twin.platform, twin.HasField("optimization")) == ("python", "", False)
    assert twin.parameters["runtime_settings"].string_value == "model.opt.runtime.json"


def test_disabled_optimizers_serve_the_saved_graph_as_it_is():
    from compiler.iospec import IOSpec
    from compiler.serve import triton_config as tc
    from compiler.serve.settings import resolve

    cfg = recipe_cfg("cnn_torch", "serve.target=triton", "serve.warmup=false", "serve.dynamic_batching.enabled=false")
    io = IOSpec.from_cfg(cfg)

    class Plan:
        backend, gpu = "onnxruntime", False

    runtime = {"session": {"graph_optimization_level": "all", "intra_op_num_threads": "auto", "inter_op_num_threads": 0,
                           "disabled_optimizers": ["QDQPropagationTransformer"]}, "providers": [["CPUExecutionProvider", {}]]}
    config = tc.model_config(resolve(cfg.serve, io, Plan, "cnn"), io, Plan, runtime,
                             [tc.TensorFacts("input", "TYPE_FP32", (-1, 1, 28, 28))], [])
    assert config.optimization.graph.level == 2 and not config.model_warmup
    assert not config.HasField("dynamic_batching") and config.instance_group[0].kind == 2  # KIND_CPU


# --- a real server -------------------------------------------------------------------------------------------

def _fixed_batch_file(folder: Path) -> Path:
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 5))
    path = folder / "fixed.onnx"
    torch.onnx.export(model.eval(), (torch.randn(2, 3, 8, 8),), str(path), input_names=["image"],
                      output_names=["scores"], dynamo=False)
    return path


def _sequence_first_file(folder: Path) -> Path:
    import torch

    class SeqFirst(torch.nn.Module):  # [seq, batch, 8] -> [seq, batch, 4]: the batch is the second dim
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 4)

        def forward(self, x):
            return torch.tanh(self.proj(x)).cumsum(0)

    path = folder / "seq_first.onnx"
    torch.onnx.export(SeqFirst().eval(), (torch.randn(5, 3, 8),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "seq", 1: "batch"}, "y": {0: "seq", 1: "batch"}}, dynamo=False)
    return path


CASES = {
    "cnn_torch": ("cnn_torch", []),
    "cnn_tf": ("cnn_tf", []),
    "bert_torch": ("bert_torch", []),
    "two_head_torch": ("two_head_torch", []),
    "decoder_kv_torch": ("decoder_kv_torch", []),
    "onnx_fixed_batch": ("onnx_file", ["model.path={fixed}"]),
    "onnx_batch_second": ("onnx_file", ["model.path={seq_first}", "model.dims.seq=[1,4,8]", "model.dims.batch=[1,2,4]"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_repository_loads_in_a_real_server_and_serves_the_engines_outputs(case, compile_cli, tmp_path: Path):
    recipe, extra = CASES[case]
    if recipe == "cnn_tf":
        pytest.importorskip("tensorflow")
    files = {"fixed": _fixed_batch_file(tmp_path), "seq_first": _sequence_first_file(tmp_path)} \
        if recipe == "onnx_file" else {}
    run = compile_cli(f"recipe={recipe}", "serve.target=triton", *TINY, *[e.format(**files) for e in extra])
    assert run.code == 0, run.output
    assert "serve" in run.report["stages"] and "## Serving (Triton)" in (run.run_dir / "report.md").read_text()
    served = {"info": run.report["serving"]}
    name, repository = served["info"]["model_name"], run.run_dir / "triton"
    assert name == recipe and (repository / name / "config.pbtxt").is_file()
    batched = served["info"]["max_batch_size"] > 0
    assert batched == (case not in ("onnx_fixed_batch", "onnx_batch_second"))

    with server.running(repository, []) as real:   # the real config: every check up to the missing backend
        loaded, message = server.load(real, name)
        assert not loaded and MISSING_BACKEND in message and message.count("load failed") == 1, message

    feeds = _verification_feeds(recipe, extra, files)
    expected = [_engine_outputs(run.run_dir, feed) for feed in feeds]
    with server.running(repository, [], config_name="python_onnxruntime") as twin:
        assert server.load(twin, name) == (True, "")
        for feed, want in zip(feeds, expected):
            for got in (_infer_http(twin, name, feed), _infer_grpc(twin, name, feed)):
                assert sorted(got) == sorted(want)
                for key in want:
                    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        _bad_requests_get_4xx(twin, name, feeds[0], served["info"]["max_batch_size"])
        sizes = _batch_sizes_under_concurrency(twin, name, feeds[0], batched)
        if batched:
            assert max(sizes) > 1, sizes
        else:
            assert sizes == {1}, sizes  # Triton does not batch a model with max_batch_size 0
        pid = twin.pid
    assert subprocess.run(["ps", "-p", str(pid)], capture_output=True).returncode == 1  # no process left
    if case == "cnn_torch":
        _the_serve_command_answers_its_curl_line_and_stops_on_ctrl_c(run.run_dir)


def _the_serve_command_answers_its_curl_line_and_stops_on_ctrl_c(run_dir: Path) -> None:
    import signal
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "compiler", "serve", str(run_dir)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(line.startswith("Ctrl-C") for line in lines):
        lines.append(process.stdout.readline())
    head = "".join(lines)
    assert "Triton (PID" in head and "HTTP  http://127.0.0.1:" in head and "gRPC  127.0.0.1:" in head, head
    curl = next(line for line in lines if "curl" in line).split("try:", 1)[1].strip()
    answer = json.loads(subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30).stdout)
    assert answer["outputs"][0]["name"] == "logits" and answer["outputs"][0]["shape"] == [1, 10]
    server_pid = int(head.split("Triton (PID ", 1)[1].split(")")[0])
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=60)[0]
    assert process.returncode == 0 and "compiler: serve: stopped" in rest
    assert subprocess.run(["ps", "-p", str(server_pid)], capture_output=True).returncode == 1


def test_the_serve_command_refuses_a_run_without_a_repository(tmp_path: Path):
    import sys

    done = subprocess.run([sys.executable, "-m", "compiler", "serve", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"compiler: serve: {tmp_path} holds no Triton repository "
                                   "(triton/<model>/config.pbtxt). Fix: compile with serve.target=triton")


def _verification_feeds(recipe: str, extra: list[str], files: dict) -> list[dict]:
    """Random valid inputs at the min and max shapes of the first profile (what verify feeds besides data)."""
    from compiler.cli import recipe_problems
    from compiler.iospec import IOSpec

    cfg = recipe_cfg(recipe, *[e.format(**files) for e in extra])
    assert not recipe_problems(cfg)
    io = IOSpec.from_cfg(cfg)
    rng = np.random.default_rng(1)
    return [io.to_engine(io.random_feed(rng, io.shapes(0, position))) for position in ("min", "max")]


def _engine_outputs(run_dir: Path, feed: dict) -> dict:
    from compiler.backends.onnxruntime import engine_session, read_runtime

    report = json.loads((run_dir / "report.json").read_text())
    engine = run_dir / report["stages"]["build"]["artifact"]
    session = engine_session(engine, read_runtime(engine))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def _infer_http(srv, name: str, feed: dict) -> dict:
    import tritonclient.http as http

    result = http.InferenceServerClient(srv.http).infer(name, _inputs(http, feed))
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


def _infer_grpc(srv, name: str, feed: dict) -> dict:
    import tritonclient.grpc as grpc

    result = grpc.InferenceServerClient(srv.grpc).infer(name, _inputs(grpc, feed))
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def _inputs(client_module, feed: dict) -> list:
    inputs = []
    for key, value in feed.items():
        tensor = client_module.InferInput(key, list(value.shape), _datatype(value))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def _datatype(value: np.ndarray) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(value.dtype)


def _post(srv, name: str, body: dict) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://{srv.http}/v2/models/{name}/infer", data=json.dumps(body).encode(),
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _request(feed: dict, change: dict | None = None) -> dict:
    inputs = []
    for key, value in feed.items():
        item = {"name": key, "shape": list(value.shape), "datatype": _datatype(value), "data": value.reshape(-1).tolist()}
        inputs.append({**item, **(change or {}).get(key, {})})
    return {"inputs": inputs}


def _bad_requests_get_4xx(srv, name: str, feed: dict, max_batch: int) -> None:
    first, value = next(iter(feed.items()))
    assert _post(srv, name, _request(feed)) == 200
    wrong_type = "FP64" if _datatype(value) != "FP64" else "INT32"
    assert 400 <= _post(srv, name, _request(feed, {first: {"datatype": wrong_type}})) < 500
    assert 400 <= _post(srv, name, _request(feed, {first: {"shape": list(value.shape) + [1]}})) < 500
    if max_batch:
        over = np.repeat(value[:1], max_batch + 1, axis=0)
        big = {**{k: np.repeat(v[:1], max_batch + 1, axis=0) for k, v in feed.items()}, first: over}
        assert 400 <= _post(srv, name, _request(big)) < 500


def _batch_sizes_under_concurrency(srv, name: str, feed: dict, batched: bool, requests: int = 96) -> set[int]:
    """Send `requests` single-sample requests (whole feeds where not batched) from 16 threads; the batch sizes the
    server's statistics counted, warm-up excluded."""
    import tritonclient.http as http

    one = {k: v[:1] for k, v in feed.items()} if batched else feed
    before = _batch_counts(srv, name)

    def send(_: int) -> None:
        http.InferenceServerClient(srv.http).infer(name, _inputs(http, one))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(send, range(requests)))
    after = _batch_counts(srv, name)
    return {size for size, count in after.items() if count > before.get(size, 0)}


def _batch_counts(srv, name: str) -> dict[int, int]:
    import tritonclient.http as http

    stats = http.InferenceServerClient(srv.http).get_inference_statistics(name)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def test_a_tensorrt_engine_is_a_tensorrt_plan_on_the_gpu():
    from compiler.iospec import IOSpec
    from compiler.serve import triton_config as tc
    from compiler.serve.settings import resolve

    cfg = recipe_cfg("resnet_torch", "serve.target=triton")
    io = IOSpec.from_cfg(cfg)

    class Plan:
        backend, gpu = "tensorrt", True

    config = tc.model_config(resolve(cfg.serve, io, Plan, "resnet_torch"), io, Plan, None,
                             [tc.TensorFacts("input", "TYPE_FP32", (-1, 1, 16, 16))],
                             [tc.TensorFacts("logits", "TYPE_FP32", (-1, 10))])
    assert (config.platform, config.max_batch_size, config.instance_group[0].kind) == ("tensorrt_plan", 64, 1)
    assert not config.HasField("optimization") and not config.parameters   # the plan holds its own settings
    twin = tc.twin_config(config, "model.onnx", None)
    assert twin.parameters["engine_file"].string_value == "model.onnx" and "runtime_settings" not in twin.parameters


def test_an_output_without_a_declared_shape_gets_its_rank_from_inference(tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper

    from compiler.iospec import IOSpec, Tensor
    from compiler.serve import triton_config as tc

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))
    io = IOSpec((Tensor("x", "float32", ("batch", 3)),), (), ({"batch": (1, 2, 4)},))
    inputs, outputs = tc.engine_io(onnx.load(str(path)), io)
    assert inputs == [tc.TensorFacts("x", "TYPE_FP32", (-1, 3))]
    assert outputs == [tc.TensorFacts("y", "TYPE_FP32", (-1, -1))]


def test_the_servers_ports_are_distinct_even_when_the_system_would_hand_one_out_twice(monkeypatch):
    """A port released right after it was picked can be the next pick too (HTTP and gRPC once got the same one):
    every port stays bound until all are picked. The stand-in socket hands out the lowest port not bound now."""
    bound: set[int] = set()

    class Socket:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            bound.discard(self.port)

        def bind(self, address):
            self.port = min(set(range(40000, 40010)) - bound)
            bound.add(self.port)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(server.socket, "socket", Socket)
    assert server.free_ports(3) == [40000, 40001, 40002]


def test_the_server_is_not_started_under_a_numpy_its_python_backend_stub_was_not_built_for(monkeypatch, tmp_path):
    """nvidia-pytriton 0.7's stub answers with names and shapes but no data under numpy 2 (seen on the lent H100):
    `start` refuses with the reason and the fix, before any process or work folder exists."""
    from importlib import metadata

    assert server.stub_numpy_problem() is None  # the serve extra resolves a numpy the stub takes
    real_version = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "2.5.2" if name == "numpy" else real_version(name))
    started = []
    monkeypatch.setattr(server.subprocess, "Popen", lambda *a, **k: started.append(a))
    monkeypatch.setattr(server.tempfile, "mkdtemp", lambda **k: started.append(k) or str(tmp_path))
    with pytest.raises(server.ServerError) as refused:
        server.start(tmp_path)
    assert str(refused.value) == (
        "nvidia-pytriton's Python backend stub is built for numpy<2.0.0,>=1.21 and this environment has numpy 2.5.2: "
        "its answers would carry no data. Fix: pip install 'numpy<2.0.0,>=1.21' (what the serve extra resolves to)")
    assert not started
