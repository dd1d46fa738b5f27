"""Quantize stage: the model in reduced precision (Q/DQ int8/fp8, or fp16/bf16), within an accuracy budget.

Runs when the EnginePlan converts the graph (plan.conversion), with the plan's tool:
- modelopt (TensorRT's default; stages/modelopt_convert.py): AutoCast for fp16/bf16, PTQ Q/DQ for int8/fp8;
- onnxruntime (the onnxruntime backend's default): int8 by onnxruntime.quantization, calibrated on a
  slice of the training data, convolutions too shallow for int8 to pay kept fp32 (min_reduction_depth);
  fp16 by onnxruntime's float16 converter, the nodes whose tensors leave fp16's range kept fp32 (stages/fp16.py).
Then, with `fallback: auto`, the
nodes whose conversion costs the most accuracy are kept in fp32, one at a time, until the drop
against the fp32 model is within verify.max_accuracy_drop. The kept list goes into the report as a
recipe snippet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from math import prod
from typing import TYPE_CHECKING, Any, Callable, List, Optional

from compiler import weights
from compiler.heavy import np, onnx
from compiler.iospec import batch_size, slice_batch
from compiler.stages import StageContext, StageResult

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec
    from compiler.plan import EnginePlan

QUANTIZABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Cheap elementwise and data-movement ops: an fp32 island grows through them, so the Q/DQ boundary of a kept
# node lands after them. Left int8, an NCHW uint8 MaxPool right after an fp32 conv costs more than the conv.
PASSTHROUGH = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "MaxPool", "AveragePool",
               "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "BatchNormalization")


class CalibrationMethod(Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class Tool(Enum):
    auto = "auto"                # onnxruntime for the onnxruntime backend, modelopt for TensorRT (plan.py)
    modelopt = "modelopt"        # ModelOpt: AutoCast (fp16/bf16), ONNX PTQ (int8/fp8 Q/DQ); TensorRT 11's path
    onnxruntime = "onnxruntime"  # onnxruntime.quantization (int8 QDQ) and its float16 converter: best CPU int8


class Fallback(Enum):
    none = "none"
    auto = "auto"


@dataclass
class QuantizeConfig:
    tool: Tool = Tool.auto
    method: CalibrationMethod = CalibrationMethod.minmax
    per_channel: bool = True
    fallback: Fallback = Fallback.auto   # none: quantize every node and let the accuracy gate judge
    keep_fp32: List[str] = field(default_factory=list)   # node names left unquantized
    max_fallback_nodes: int = 8
    # 7-bit weights: avoids the u8*s8 16-bit saturation of x86 CPUs without VNNI; null = auto (on unless VNNI)
    reduce_range: Optional[bool] = None
    # int8 pays only on deep reductions: Conv/Gemm/MatMul nodes summing fewer than this many products per output
    # (a 3x3 conv over 1 channel: 9) stay fp32. 0 quantizes every one.
    min_reduction_depth: int = 32
    # ModelOpt AutoCast (fp16/bf16): nodes whose inputs/outputs exceed data_max on calibration data, or whose
    # weights exceed init_max, stay fp32 (AutoCast's own defaults)
    data_max: float = 512.0
    init_max: float = 65504.0


def cpu_has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


def reduce_range(quantize_cfg) -> bool:
    return quantize_cfg.reduce_range if quantize_cfg.reduce_range is not None else not cpu_has_vnni()


def _reader(samples: dict, batch: int = 32):
    from onnxruntime.quantization import CalibrationDataReader


    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([slice_batch(samples, i, i + batch) for i in range(0, batch_size(samples), batch)])

        def get_next(self):
            return next(self._batches, None)

    return Reader()


def reduction_depth(node, initializers: dict) -> Optional[int]:
    """Products summed per output element (K of the GEMM the node becomes); None when not known statically.

    Grouped and depthwise convolutions have kernels of their own, so only plain ones get a depth.
    """
    attrs = {a.name: a for a in node.attribute}
    weight = initializers.get(node.input[1]) if len(node.input) > 1 else None
    if weight is None:
        return None
    dims = list(weight.dims)
    if node.op_type == "Conv":
        return None if attrs.get("group") and attrs["group"].i != 1 else prod(dims[1:])
    if node.op_type == "Gemm":
        return dims[1] if attrs.get("transB") and attrs["transB"].i else dims[0]
    if node.op_type == "MatMul" and len(dims) >= 2:
        return dims[-2]
    return None


def shallow_nodes(model, min_depth: int) -> list[str]:
    """Compute nodes whose reduction is too shallow for int8 to pay (quantize.min_reduction_depth)."""
    initializers = {i.name: i for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in QUANTIZABLE
            and (depth := reduction_depth(n, initializers)) is not None and depth < min_depth]


def fp32_islands(model, seeds: list[str]) -> list[str]:
    """The seeds plus the single-consumer chain of PASSTHROUGH ops after each, in graph order."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    by_name = {n.name: n for n in model.graph.node}
    island = set(seeds)
    for seed in seeds:
        node = by_name.get(seed)
        while node is not None and node.output and node.output[0] not in outputs:
            after = consumers.get(node.output[0], [])
            node = after[0] if len(after) == 1 and after[0].op_type in PASSTHROUGH else None
            if node is not None:
                island.add(node.name)
    return [n.name for n in model.graph.node if n.name in island]


def quantize(src: Path, dst: Path, samples, cfg: DictConfig, exclude: list[str], calibration_cache: Path) -> None:
    """QDQ-quantize every op onnxruntime can (so activations and pools stay int8 between compute nodes)."""
    from onnxruntime.quantization import CalibrationMethod as Method, QuantFormat, QuantType, quantize_static

    method = {"minmax": Method.MinMax, "entropy": Method.Entropy, "percentile": Method.Percentile}[cfg.quantize.method.value]
    quantize_static(str(src), str(dst), _reader(samples), quant_format=QuantFormat.QDQ,
                    per_channel=cfg.quantize.per_channel, reduce_range=reduce_range(cfg.quantize), activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=list(exclude) or None,
                    calibration_cache_path=str(calibration_cache), extra_options={"ActivationSymmetric": False})


def score(path: Path, x: dict, y, metric, batch: int) -> float:
    """The task metric of an ONNX model on onnxruntime's CPU provider."""
    import onnxruntime as ort

    from compiler.verify.metric import evaluate

    from compiler.backends.onnxruntime import without_prepacking

    session = ort.InferenceSession(str(path), without_prepacking(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return evaluate(lambda feed: dict(zip(names, session.run(None, feed))), x, y, metric, batch)


def budget_search(attempt: Callable[[list[str]], Optional[float]], ok: Callable[[float], bool],
                  candidates: list[str], keep: list[str], cfg: DictConfig,
                  log) -> tuple[list[str], Optional[float], list[dict]]:
    """Keep nodes in fp32, the most sensitive first, until `ok(score)`: the accuracy budget with labels, the
    agreement gate without. A score of None (the model cannot run here) ends the search: verify's gate judges."""
    score = attempt(keep)
    trail = [{"kept_fp32": list(keep), "score": score}]
    if score is None or cfg.quantize.fallback.value != "auto" or ok(score):
        return keep, score, trail
    sensitivity = {node: attempt(keep + [node]) for node in candidates}  # score regained by this one node in fp32
    for node in sorted(candidates, key=lambda n: -sensitivity[n])[: cfg.quantize.max_fallback_nodes]:
        keep = keep + [node]
        score = attempt(keep)
        trail.append({"kept_fp32": list(keep), "score": score})
        log.info("fallback: keeping %s in fp32 -> score %.4f", node, score)
        if ok(score):
            break
    return keep, score, trail


@dataclass
class Judge:
    """How a converted model is scored in the fallback search: top-1 against labels, or agreement with the fp32
    model on inputs without labels (verify/agreement.py). Higher scores are better."""

    score: Callable[[Path], Optional[float]]
    ok: Callable[[float], bool]
    reference: Optional[float]   # the fp32 model's score
    kind: str                    # "accuracy" | "agreement"


def _judge(cfg: DictConfig, io: IOSpec, plan: EnginePlan, src: Path, x_eval: dict, y_eval) -> Judge:
    from compiler.verify.metric import metric_of

    if y_eval is not None:
        metric, batch = metric_of(cfg, io), io.fixed_batch or min(256, io.batch_range()[2])
        fp32 = score(src, x_eval, y_eval, metric, batch)
        return Judge(lambda path: runnable(lambda: score(path, x_eval, y_eval, metric, batch)),
                     lambda s: (fp32 - s) * 100 <= cfg.verify.max_accuracy_drop, fp32, "accuracy")
    from compiler.backends.onnxruntime import cpu_outputs
    from compiler.verify import agreement

    reference = cpu_outputs(src, x_eval)
    limits = agreement.budgets(plan.precision, cfg.verify.agreement, io.outputs)

    def agree(path: Path) -> Optional[float]:
        rows = runnable(lambda: agreement.compare([reference], [cpu_outputs(path, x_eval)], limits))
        if rows is None:
            return None
        return agreement.score(rows) if all(r["passed"] for r in rows) else agreement.score(rows) - 1.0

    return Judge(agree, lambda s: s >= -1.0, 0.0, "agreement")


def calibration_inputs(cfg: DictConfig, io: IOSpec) -> tuple[dict, dict, Any, str]:
    """(calibration inputs, evaluation inputs, their labels or None, where they came from), in the engine's layout.
    The recipe's data where it has some; else (data.source=none) generated inputs at the opt shapes, which are
    valid but not representative, and the report says so."""
    if cfg.data.source.value != "none":
        from compiler.data.sources import load_dataset

        data = load_dataset(cfg.data, io, cfg.seed)
        return (io.to_engine(data.calibration(cfg.data.calibration_size)), io.to_engine(data.x_test), data.y_test,
                f"{cfg.data.source.value} data" + (" (unlabelled: your inputs)" if data.y_test is None else ""))
    rng = np.random.default_rng(cfg.seed)
    count = io.fixed_batch or min(cfg.data.calibration_size, GENERATED_CALIBRATION)
    calibration = io.random_feed(rng, io.shapes(0, "opt", batch=count))
    evaluation = io.random_feed(rng, io.shapes(0, "opt", batch=io.fixed_batch or GENERATED_EVALUATION))
    return calibration, evaluation, None, (f"generated: {count} random valid inputs at the opt shapes; not "
                                           "representative of real data (give data.source=npz data.path=... for a "
                                           "calibration that is)")


GENERATED_CALIBRATION = 64   # samples, without data: random inputs calibrate int8 ranges only roughly anyway
GENERATED_EVALUATION = 16


def run(ctx: StageContext) -> StageResult:
    cfg, io, plan = ctx.cfg, ctx.io, ctx.plan
    precision, tool = plan.conversion, plan.tool
    calibration, x_eval, y_eval, source = calibration_inputs(cfg, io)
    src, out = ctx.inputs["surgery"], ctx.work_dir / f"model.{precision}.onnx"
    graph = weights.load(src)  # node names and structure; weights stay on disk until one is read
    judge = _judge(cfg, io, plan, src, x_eval, y_eval)
    keep = list(cfg.quantize.keep_fp32)
    info: dict = {"tool": tool, "calibration": source, "judged_by": judge.kind}
    if tool == "modelopt":
        from compiler.stages.modelopt_convert import convert as modelopt_convert

        forced: list[str] = []

        def write(kept: list[str]) -> None:
            modelopt_convert(src, out, precision, kept, calibration, cfg.quantize, plan.high_precision, ctx.work_dir)
    elif precision == "fp16":
        from compiler.stages.fp16 import convert, overflow_nodes

        if plan.fusion:  # onnxruntime's fused kernels first: where fp16 pays on the CUDA provider (the plan says)
            from compiler.backends.cuda_fusion import CHECK_SAMPLES, fuse_for_gpu

            fused = ctx.work_dir / "model.fused.onnx"  # kept only where it computes what src does, on calibration
            check = slice_batch(calibration, 0, io.fixed_batch or CHECK_SAMPLES)
            info["fused_for_gpu"] = fuse_for_gpu(src, fused, check)
            src, graph = fused, weights.load(fused)
        forced = [n for n in overflow_nodes(graph, calibration) if n not in keep] \
            if cfg.quantize.fallback.value == "auto" else []
        info["kept_fp32_overflow"] = forced

        def write(kept: list[str]) -> None:
            convert(src, out, forced + kept)
    else:
        forced = [n for n in shallow_nodes(graph, cfg.quantize.min_reduction_depth) if n not in keep]
        cache = ctx.work_dir / "calibration.json"
        info.update({"kept_fp32_shallow": forced, "method": cfg.quantize.method.value,
                     "per_channel": cfg.quantize.per_channel, "reduce_range": reduce_range(cfg.quantize),
                     "min_reduction_depth": cfg.quantize.min_reduction_depth})

        def write(kept: list[str]) -> None:
            quantize(src, out, calibration, cfg, fp32_islands(graph, forced + kept), cache)

    def attempt(kept: list[str]) -> float | None:
        write(kept)
        return judge.score(out)

    candidates = [n.name for n in graph.graph.node if n.op_type in QUANTIZABLE and n.name not in keep + forced]
    keep, reached, trail = budget_search(attempt, judge.ok, candidates, keep, cfg, ctx.log)
    converted = onnx.load(str(out), load_external_data=False)
    info["calibration_samples"] = int(next(iter(calibration.values())).shape[0])
    info["quantize_linear_nodes"] = sum(n.op_type == "QuantizeLinear" for n in converted.graph.node)
    if tool == "onnxruntime" and precision == "int8":
        info["fp32_nodes"] = fp32_islands(graph, forced + keep)
    if reached is None:
        info["not_measured"] = f"onnxruntime's CPU provider cannot run this {precision} model; " \
                               "the engine's gate, measured in verify, judges it"
    scores = {"fp32_accuracy": judge.reference, f"{precision}_accuracy": reached} if judge.kind == "accuracy" else \
        {"agreement_score": reached}
    snippet = "quantize:\n  keep_fp32: [" + ", ".join(keep) + "]\n" if keep else ""
    return StageResult(out.name, {"precision": precision, **scores, "kept_fp32": keep, "search": trail,
                                  "snippet": snippet, **info})


def runnable(compute: Callable[[], Any]) -> Any:
    """compute(), or None when onnxruntime has no kernel for the converted model's types (bf16 on CPU)."""
    try:
        return compute()
    except Exception as exc:  # onnxruntime's NOT_IMPLEMENTED: no bf16 Conv on the CPU provider, say
        if "NOT_IMPLEMENTED" in str(exc) or "Could not find an implementation" in str(exc):
            return None
        raise
