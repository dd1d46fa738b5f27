"""onnxruntime backend: optimise the cleaned model once and save it (ONNX or ORT format) as the engine.

Every session option comes from the EnginePlan (plan.py). An engine is its file plus its runtime settings
(providers with their options, session options, CUDA graph capture): `runtime()` makes them from the plan, the
build writes them beside the engine (`<engine>.runtime.json`), and every session that verifies, times or serves
the engine opens it with them (`load_session`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

from compiler.backends.providers import with_options
from compiler.cache import runtime_file
from compiler.heavy import np, onnx
from compiler.numerics import STRICT_FP32, MathMode
from compiler.onnx_files import has_external_data
from compiler.weights import EXTERNAL_THRESHOLD

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def without_prepacking() -> ort.SessionOptions:
    """Options for a session that only loads, probes, converts or compares a model, never one that is timed or
    shipped (the engine keeps onnxruntime's defaults). Prepacking copies every Gemm/MatMul/Conv weight into a
    layout of its own when the session loads: a second copy of the weights (on a 2.25 GiB model +255 MB and 8 s
    per session) for a speed these sessions do not need; the weights stay mapped from their file instead. The
    kernels, and so the outputs, are the same (bitwise on 61 of 62 corpus files at every optimisation level,
    1.7e-10 apart on the other)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_prepacking", "1")
    return options


def cpu_outputs(path: Path, feed: dict) -> dict:
    """A model's outputs by name on the CPU provider, in a session that only checks (without_prepacking)."""
    session = ort.InferenceSession(str(path), without_prepacking(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {i.name: feed[i.name] for i in session.get_inputs()})))


def session_options(options_cfg: dict, optimization_level: str | None = None,
                    intra_op_threads: int | None = None, prepack: bool = True) -> ort.SessionOptions:
    """Session options from a plan's `onnxruntime` dict; `auto` threads run with onnxruntime's default;
    `prepack=False` for a session that only checks (without_prepacking)."""
    options = ort.SessionOptions() if prepack else without_prepacking()
    options.graph_optimization_level = _LEVELS[optimization_level or options_cfg["optimization_level"]]
    threads = options_cfg["intra_op_threads"] if intra_op_threads is None else intra_op_threads
    options.intra_op_num_threads = 0 if threads == "auto" else int(threads)
    options.inter_op_num_threads = int(options_cfg["inter_op_threads"])
    options.log_severity_level = 3
    for library in options_cfg["custom_op_libraries"]:
        options.register_custom_ops_library(str(Path(library).expanduser()))
    return options


def providers(options_cfg: dict, mode: MathMode = STRICT_FP32, model: Path | None = None, layout: str = "auto",
              cuda_graph: bool = False) -> list:
    """The plan's providers that this onnxruntime build has, the CUDA provider with the math mode's options
    (onnxruntime's CUDA default is TF32 on; strict fp32 turns it off), the layout and graph capture asked for,
    and the plan's extra CUDA options."""
    available = set(ort.get_available_providers())
    chosen = [p for p in options_cfg["providers"] or ["CPUExecutionProvider"] if p in available]
    cuda = dict(options_cfg.get("cuda_options") or {})
    if "CUDAExecutionProvider" in chosen and model is not None:
        cuda = {**cuda_defaults(model, layout), **({"enable_cuda_graph": "1"} if cuda_graph else {}), **cuda}
    return with_options(chosen, cuda, mode) or ["CPUExecutionProvider"]


CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv")


def convolutions(model: Path) -> int:
    """How many convolution nodes the model has (0 for an ORT-format file, which onnx cannot read)."""
    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except Exception:  # an ORT-format file
        return 0
    return sum(n.op_type in CONV_OPS for n in graph.node)


def cuda_defaults(model: Path, layout: str = "auto") -> dict[str, str]:
    """The CUDA provider's layout: `auto` is NHWC convolution kernels for convolutional networks (ConvNeXt-T on an
    H200: fp16 9.25 -> 8.38 ms at b64, fp32 24.3 -> 22.0) and the provider's own default otherwise, a transformer
    whose one convolution is its patch embedding included (NHWC cost a ViT-S 3 %, and its layout pass left the
    class token's shape arithmetic split across CPU and GPU: 2 Memcpy per call, no CUDA graph); `nhwc`/`nchw` as
    asked (`precision: best` tries both)."""
    if effective_layout(layout, convolutions(model)) == "nhwc":
        return {"prefer_nhwc": "1"}
    return {"prefer_nhwc": "0"} if layout == "nchw" else {}


def effective_layout(layout: str, convolutions: int) -> str:
    """The layout the CUDA provider runs: `auto` is NHWC for a convolutional network (more than one convolution)."""
    return "nhwc" if layout == "nhwc" or (layout == "auto" and convolutions > 1) else "nchw"


def runtime(plan: Any, engine: Path) -> dict:
    """The engine's runtime settings, as every session that verifies, times or serves it is opened: the stable
    interface report.json and `<engine>.runtime.json` hold (and the reproducer prints)."""
    o = plan.onnxruntime
    level = o["optimization_level"]
    return {
        "providers": [[p, {}] if isinstance(p, str) else [p[0], dict(p[1])]
                      for p in providers(o, plan.math_mode, engine, plan.layout, plan.cuda_graph)],
        "session": {"graph_optimization_level": level, "intra_op_num_threads": o["intra_op_threads"],
                    "inter_op_num_threads": o["inter_op_threads"], "disabled_optimizers": list(o["disabled_optimizers"]),
                    "custom_op_libraries": list(o["custom_op_libraries"])},
        "cuda_graph": bool(plan.cuda_graph), "fusion": bool(plan.fusion), "layout": plan.layout,
        "math_mode": plan.math_mode.name, "onnxruntime": ort.__version__,
    }


def write_runtime(plan: Any, engine: Path) -> dict:
    import json

    settings = runtime(plan, engine)
    runtime_file(engine).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return settings


def read_runtime(engine: Path) -> dict | None:
    import json

    path = runtime_file(engine)
    return json.loads(path.read_text()) if path.is_file() else None


# Saved engines stop at `extended`: `all` adds layout transforms (NCHWc) specific to this CPU, which
# onnxruntime re-applies when the engine is loaded with optimization_level=all anyway.
_PORTABLE = ("disable", "basic", "extended")
# Fusions a saved CUDA engine leaves to the session that opens it: they bind a convolution to NCHW. The CUDA
# provider's FusedConv (Conv + activation, + residual Add) has no NHWC kernel, so an engine saved with it runs those
# convolutions in NCHW under `prefer_nhwc`. The opening session fuses them itself where its layout is NCHW.
LAYOUT_BOUND_FUSIONS = ("ConvActivationFusion",)


def build(onnx_path: Path, out_dir: Path, plan: Any) -> tuple[str, dict]:
    """Write the optimised model (`model.opt.onnx`, or `model.ort`); return its name and what was done."""
    o = plan.onnxruntime
    level = o["optimization_level"]
    options = session_options(o, level if level in _PORTABLE else "extended", prepack=False)  # saved, not run
    fmt = o["format"]
    engine = out_dir / ("model.ort" if fmt == "ort" else "model.opt.onnx")
    options.optimized_model_filepath = str(engine)
    options.add_session_config_entry("session.save_model_format", fmt.upper())
    if fmt == "onnx" and has_external_data(onnx_path):  # weights stay beside the engine; protobuf stops at 2 GiB
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", engine.name + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(EXTERNAL_THRESHOLD))
    skipped = o["disabled_optimizers"]
    # saved in no layout (NHWC is a runtime setting of the CUDA provider, applied when the engine is opened)
    chosen = providers(o, plan.math_mode, onnx_path, "nchw")
    on_cuda = any((p if isinstance(p, str) else p[0]) == "CUDAExecutionProvider" for p in chosen)
    left_to_runtime = [f for f in LAYOUT_BOUND_FUSIONS if f not in skipped] if on_cuda else []
    session = ort.InferenceSession(str(onnx_path), options, providers=chosen,
                                   disabled_optimizers=[*skipped, *left_to_runtime])
    copies = drop_saved_copies(engine) if fmt == "onnx" else 0
    settings = write_runtime(plan, engine)
    return engine.name, {"providers": session.get_providers(), "math_mode": plan.math_mode.name, "runtime": settings,
                         "saved_copies_dropped": copies, "left_to_runtime": left_to_runtime,
                         "optimization_level": level,
                         "saved_at_level": level if level in _PORTABLE else "extended", "disabled_optimizers": skipped,
                         "format": fmt, "onnxruntime": ort.__version__}


COPY_OPS = ("MemcpyFromHost", "MemcpyToHost")


def drop_saved_copies(engine: Path) -> int:
    """Take out the Memcpy nodes onnxruntime writes into a model it optimised for the CUDA provider (measured: a
    dynamic-batch ViT saved from a CUDA session carries a MemcpyFromHost and a MemcpyToHost around its class-token
    shape arithmetic). They record the build session's placement; a session that loads the file runs them as they
    are, even where its own placement needs no copy, and some onnxruntime builds cannot open the file without the
    CUDA provider (microsoft/onnxruntime#11348). The loading session inserts the copies its placement needs itself.
    Returns how many were dropped."""
    model = onnx.load(str(engine), load_external_data=False)  # the weights file beside it is left as it is
    graph = model.graph
    copies = [n for n in graph.node if n.op_type in COPY_OPS and n.domain in ("", "ai.onnx")]
    if not copies:
        return 0
    source = {n.output[0]: n.input[0] for n in copies}

    def original(name: str) -> str:
        while name in source:
            name = source[name]
        return name

    for node in copies:
        graph.node.remove(node)
    for node in graph.node:
        node.input[:] = [original(name) for name in node.input]
    for output in graph.output:
        if output.name in source:  # a graph output keeps its name: its copy becomes an Identity
            graph.node.append(onnx.helper.make_node("Identity", [original(output.name)], [output.name],
                                                    name=f"{output.name}_identity"))
    onnx.save(model, str(engine))
    return len(copies)


def load_session(path: Path, plan: Any, optimization_level: str | None = None,
                 intra_op_threads: int | None = None, mode: MathMode | None = None,
                 prepack: bool = True) -> ort.InferenceSession:
    """A session over an ONNX or ORT file with the plan's threads, providers and disabled transformers, in the
    given math mode (default: the plan's, i.e. the engine's; references pass STRICT_FP32). An engine (a file with
    runtime settings beside it, opened in its own math mode) gets exactly those settings."""
    o = plan.onnxruntime
    settings = read_runtime(Path(path)) if mode is None else None
    if settings is not None:
        return engine_session(path, settings, optimization_level, intra_op_threads, prepack)
    return ort.InferenceSession(str(path), session_options(o, optimization_level, intra_op_threads, prepack),
                                providers=providers(o, plan.math_mode if mode is None else mode, path),
                                disabled_optimizers=o["disabled_optimizers"])


def engine_session(path: Path, settings: dict, optimization_level: str | None = None,
                   intra_op_threads: int | None = None, prepack: bool = True,
                   profile_prefix: str | None = None, placed_model: Path | None = None) -> ort.InferenceSession:
    """A session over an engine with its runtime settings (read_runtime): what the compiler verified and timed,
    and what a server or a user's script opens it with. `profile_prefix`: onnxruntime profiles its runs there;
    `placed_model`: onnxruntime writes the graph it optimised and placed for this session there."""
    s = settings["session"]
    options = session_options({"optimization_level": s["graph_optimization_level"],
                               "intra_op_threads": s["intra_op_num_threads"],
                               "inter_op_threads": s["inter_op_num_threads"],
                               "custom_op_libraries": s["custom_op_libraries"]},
                              optimization_level, intra_op_threads, prepack)
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    if placed_model:
        options.optimized_model_filepath = str(placed_model)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         placed_model.name + ".data")
    available = set(ort.get_available_providers())
    chosen = [(name, opts) if opts else name for name, opts in settings["providers"] if name in available]
    return ort.InferenceSession(str(path), options, providers=chosen or ["CPUExecutionProvider"],
                                disabled_optimizers=s["disabled_optimizers"])


class CudaGraphSession:
    """An engine captured as CUDA graphs on onnxruntime's CUDA provider: one graph per input shape (the run option
    `gpu_graph_id`), each with its inputs and outputs at fixed device addresses; a new feed is copied into them in
    place and the graph replayed. onnxruntime replays whatever a graph's buffers hold and checks no shape, so a
    shape never reuses another shape's id."""

    def __init__(self, session: ort.InferenceSession, device_id: int = 0):
        self.session, self.device_id = session, device_id
        self.output_names = [o.name for o in session.get_outputs()]
        self._graphs: dict[tuple, dict] = {}

    def _graph(self, feed: dict) -> dict:
        key = tuple((name, value.shape, value.dtype.str) for name, value in sorted(feed.items()))
        if key not in self._graphs:
            inputs = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), "cuda", self.device_id)
                      for k, v in feed.items()}
            probe = self.session.io_binding()  # one uncaptured run learns the outputs' shapes and types
            for name, value in inputs.items():
                probe.bind_ortvalue_input(name, value)
            for name in self.output_names:
                probe.bind_output(name, "cuda", self.device_id)
            uncaptured = ort.RunOptions()
            uncaptured.add_run_config_entry("gpu_graph_id", "-1")
            self.session.run_with_iobinding(probe, uncaptured)
            shapes = probe.copy_outputs_to_cpu()
            outputs = [ort.OrtValue.ortvalue_from_shape_and_type(list(a.shape), a.dtype, "cuda", self.device_id)
                       for a in shapes]
            binding = self.session.io_binding()
            for name, value in inputs.items():
                binding.bind_ortvalue_input(name, value)
            for name, value in zip(self.output_names, outputs):
                binding.bind_ortvalue_output(name, value)
            options = ort.RunOptions()
            options.add_run_config_entry("gpu_graph_id", str(len(self._graphs) + 1))  # 0 is onnxruntime's own
            self._graphs[key] = {"binding": binding, "inputs": inputs, "outputs": outputs, "options": options,
                                 "last": None}
        return self._graphs[key]

    def run(self, feed: dict, fetch: bool = True) -> dict | None:
        """Replay the feed's graph (captured on first use); its outputs as numpy arrays when `fetch`."""
        graph = self._graph(feed)
        if graph["last"] is not feed:  # the same feed again (timing) is already in place
            for name, value in feed.items():
                graph["inputs"][name].update_inplace(np.ascontiguousarray(value))
            graph["last"] = feed
        self.session.run_with_iobinding(graph["binding"], graph["options"])
        return {name: value.numpy() for name, value in zip(self.output_names, graph["outputs"])} if fetch else None

    def copy_times(self, feed: dict, repeats: int = 5) -> dict[str, float]:
        """Milliseconds to copy this feed into its graph's inputs and one call's outputs out (median)."""
        import time


        graph = self._graph(feed)
        self.run(feed, fetch=False)
        up, down = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            for name, value in feed.items():
                graph["inputs"][name].update_inplace(np.ascontiguousarray(value))
            up.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            [value.numpy() for value in graph["outputs"]]
            down.append((time.perf_counter() - start) * 1e3)
        return {"host_to_device_ms": float(np.median(up)), "device_to_host_ms": float(np.median(down))}


def without_graph_capture(settings: dict) -> dict:
    """An engine's runtime settings with CUDA graph capture off: for a session that profiles its nodes, which a
    replayed graph hides."""
    providers = [[name, {k: v for k, v in opts.items() if k != "enable_cuda_graph"}]
                 for name, opts in settings["providers"]]
    return {**settings, "providers": providers, "cuda_graph": False}


def placement(path: Path, plan: Any, feed: dict) -> dict:
    """Which provider runs each node of the engine, from onnxruntime's profile of one run with its runtime
    settings (graph capture aside: it changes no placement): the nodes left on the CPU and the Memcpy nodes the
    CUDA provider put between them, each a host<->device copy on every call."""
    import json
    import tempfile
    from collections import Counter

    settings = without_graph_capture(read_runtime(path) or runtime(plan, path))
    with tempfile.TemporaryDirectory() as folder:
        session = engine_session(path, settings, profile_prefix=str(Path(folder) / "placement"))
        session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, tuple[str, str]] = {}
    for event in events:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args and "op_name" in args:
            nodes[event["name"].removesuffix("_kernel_time")] = (args["op_name"], args["provider"])
    memcpy = sorted(name for name, (op, _) in nodes.items() if op.startswith("Memcpy"))
    on_cpu = sorted(f"{name} ({op})" for name, (op, provider) in nodes.items()
                    if provider == "CPUExecutionProvider" and not op.startswith("Memcpy"))
    return {"nodes": len(nodes), "memcpy": len(memcpy), "memcpy_nodes": memcpy, "cpu_nodes": on_cpu,
            "copies": copies_placed(path, settings) if memcpy else [],
            "by_provider": dict(Counter(provider for _, provider in nodes.values()))}


def copies_placed(path: Path, settings: dict) -> list[str]:
    """What each Memcpy node of a session over the engine copies, between which nodes (`MemcpyToHost
    /blocks.0/Add_output_0: Add /blocks.0/Add -> Reshape /Reshape_3`): read from the graph onnxruntime optimises
    and places for the session (written only when there are copies to explain)."""
    import tempfile


    with tempfile.TemporaryDirectory() as folder:
        placed = Path(folder) / "placed.onnx"
        engine_session(path, settings, intra_op_threads=1, prepack=False, placed_model=placed)
        return describe_copies(onnx.load(str(placed), load_external_data=False).graph)


def describe_copies(graph: Any) -> list[str]:
    """One line per Memcpy node of a placed graph: the op, the tensor, its producer and its consumers."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    lines = []
    for node in graph.node:
        if node.op_type in COPY_OPS:
            src = producer.get(node.input[0])
            before = f"{src.op_type} {src.name}" if src is not None else "graph input or initializer"
            after = ", ".join(f"{c.op_type} {c.name}" for c in consumers.get(node.output[0], [])) or "graph output"
            lines.append(f"{node.op_type} {node.input[0]}: {before} -> {after}")
    return lines


def graph_capturable(placed: dict) -> bool:
    """Whether onnxruntime can capture the engine in a CUDA graph, from its placement: no Memcpy node, and the
    nodes on the CUDA provider. Shape arithmetic on the CPU (Shape -> Gather -> Concat feeding a Reshape) is
    allowed: onnxruntime captures around it and only warns; a compute node on the CPU always needs a Memcpy."""
    return placed.get("memcpy", 1) == 0 and placed.get("by_provider", {}).get("CUDAExecutionProvider", 0) > 0
