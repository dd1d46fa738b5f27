"""Quantize stage: INT8 post-training quantization to a QDQ model, with an accuracy budget.

Runs when engine.precision is int8. onnxruntime.quantization calibrates on a slice of the
training data; with `fallback: auto` the nodes whose quantization costs the most accuracy are
kept in fp32, one at a time, until the drop against the fp32 model is within
verify.max_accuracy_drop. The kept list goes into the report as a recipe snippet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import List, Optional

from compiler.stages import StageContext, StageResult

QUANTIZABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class CalibrationMethod(Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class Fallback(Enum):
    none = "none"
    auto = "auto"


@dataclass
class QuantizeConfig:
    method: CalibrationMethod = CalibrationMethod.minmax
    per_channel: bool = True
    fallback: Fallback = Fallback.auto   # none: quantize every node and let the accuracy gate judge
    keep_fp32: List[str] = field(default_factory=list)   # node names left unquantized
    max_fallback_nodes: int = 8
    # 7-bit weights: avoids the u8*s8 16-bit saturation of x86 CPUs without VNNI; null = auto (on unless VNNI)
    reduce_range: Optional[bool] = None


def cpu_has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


def reduce_range(cfg) -> bool:
    return cfg.quantize.reduce_range if cfg.quantize.reduce_range is not None else not cpu_has_vnni()


def _reader(input_name: str, samples, batch: int = 32):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{input_name: samples[i:i + batch]} for i in range(0, len(samples), batch)])

        def get_next(self):
            return next(self._batches, None)

    return Reader()


def quantize(src: Path, dst: Path, samples, cfg, keep: list[str], calibration_cache: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod as Method, QuantFormat, QuantType, quantize_static

    method = {"minmax": Method.MinMax, "entropy": Method.Entropy, "percentile": Method.Percentile}[cfg.quantize.method.value]
    quantize_static(str(src), str(dst), _reader(cfg.model.input.name, samples), quant_format=QuantFormat.QDQ,
                    per_channel=cfg.quantize.per_channel, reduce_range=reduce_range(cfg), activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=list(keep) or None,
                    op_types_to_quantize=list(QUANTIZABLE),  # a kept node's inputs and outputs then stay fp32
                    calibration_cache_path=str(calibration_cache), extra_options={"ActivationSymmetric": False})


def top1(path: Path, x, y, input_name: str) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct = 0
    for i in range(0, len(x), 256):
        correct += int((session.run(None, {input_name: x[i:i + 256]})[0].argmax(1) == y[i:i + 256]).sum())
    return correct / max(1, len(x))


def run(ctx: StageContext) -> StageResult:
    import onnx

    from compiler.data.sources import load_dataset
    from compiler.stages.verify import engine_layout

    cfg = ctx.cfg
    data = load_dataset(cfg.data, cfg.model.input.shape, cfg.seed)
    calibration = engine_layout(cfg, data.calibration(cfg.data.calibration_size))
    x_test = engine_layout(cfg, data.x_test)
    src, out = ctx.inputs["surgery"], ctx.work_dir / "model.int8.onnx"
    cache = ctx.work_dir / "calibration.json"
    name = cfg.model.input.name
    fp32 = top1(src, x_test, data.y_test, name)
    keep = list(cfg.quantize.keep_fp32)
    quantize(src, out, calibration, cfg, keep, cache)
    accuracy = top1(out, x_test, data.y_test, name)
    budget = cfg.verify.max_accuracy_drop
    trail = [{"kept_fp32": list(keep), "accuracy": accuracy}]
    if cfg.quantize.fallback.value == "auto" and (fp32 - accuracy) * 100 > budget:
        nodes = [n.name for n in onnx.load(str(src)).graph.node if n.op_type in QUANTIZABLE and n.name not in keep]
        sensitivity = {}
        for node in nodes:  # accuracy regained when this one node stays fp32
            quantize(src, out, calibration, cfg, keep + [node], cache)
            sensitivity[node] = top1(out, x_test, data.y_test, name)
        for node in sorted(nodes, key=lambda n: -sensitivity[n])[: cfg.quantize.max_fallback_nodes]:
            keep.append(node)
            quantize(src, out, calibration, cfg, keep, cache)
            accuracy = top1(out, x_test, data.y_test, name)
            trail.append({"kept_fp32": list(keep), "accuracy": accuracy})
            ctx.log.info("fallback: keeping %s in fp32 -> accuracy %.4f (fp32 %.4f)", node, accuracy, fp32)
            if (fp32 - accuracy) * 100 <= budget:
                break
    quantized = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    snippet = "quantize:\n  keep_fp32: [" + ", ".join(keep) + "]\n" if keep else ""
    return StageResult(out.name, {"fp32_accuracy": fp32, "int8_accuracy": accuracy, "kept_fp32": keep,
                                  "quantize_linear_nodes": quantized, "search": trail, "snippet": snippet,
                                  "method": cfg.quantize.method.value, "per_channel": cfg.quantize.per_channel,
                                  "reduce_range": reduce_range(cfg),
                                  "calibration_samples": int(len(calibration))})
