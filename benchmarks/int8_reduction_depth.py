"""Where int8 pays on this CPU: the first of two 3x3 convs, int8 or left fp32, by its reduction depth.

    python benchmarks/int8_reduction_depth.py [--channels 1 2 3 4 8 16 32] [--threads 0]

Model: conv A (C -> 32 channels) + ReLU, conv B (32 -> 64) + ReLU, batch 32 of 28x28, QDQ-quantized twice:
everything int8, and conv A + its ReLU kept fp32 (as `quantize.min_reduction_depth` keeps it), both loaded
without QDQ propagation as the compiler's int8 engines are. The depth K = C x 3 x 3 is what that option
compares against: int8 GEMM kernels work on K in blocks, so a shallow conv (an image model's first layer)
can be slower in int8 than in fp32's direct convolution. Needs only onnx, onnxruntime and numpy.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from _timing import session_run_ms
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static


def conv_model(channels: int, path: Path, rng: np.random.Generator) -> None:
    def weights(name: str, cout: int, cin: int) -> list:
        return [numpy_helper.from_array(rng.normal(0, 0.3, (cout, cin, 3, 3)).astype(np.float32), f"{name}_w"),
                numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b")]

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "a_w", "a_b"], ["a"], name="a", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["ar"], name="a_relu"),
         helper.make_node("Conv", ["ar", "b_w", "b_b"], ["b"], name="b", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["b"], ["y"], name="b_relu")], "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64, 28, 28])],
        weights("a", 32, channels) + weights("b", 64, 32))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime of the last years reads
    onnx.save(model, str(path))


class Reader(CalibrationDataReader):
    def __init__(self, x: np.ndarray) -> None:
        self.batches = iter([{"x": x}])

    def get_next(self):
        return next(self.batches, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", nargs="+", type=int, default=[1, 2, 3, 4, 8, 16, 32])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    print(f"onnxruntime {ort.__version__}, {args.threads or 'default'} threads\n")
    print("| conv A input channels | K | A kept fp32: ms (b32) | A int8: ms (b32) | speed-up from int8 A |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.channels:
            src, kept, int8 = (Path(tmp) / f"c{c}{tag}.onnx" for tag in ("", ".kept", ".int8"))
            conv_model(c, src, rng)
            x = rng.random((32, c, 28, 28), dtype=np.float32)
            for out, exclude in ((kept, ["a", "a_relu"]), (int8, None)):
                quantize_static(str(src), str(out), Reader(x), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                nodes_to_exclude=exclude)
            sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"],
                                             disabled_optimizers=["QDQPropagationTransformer"]) for p in (kept, int8)]
            times: list[list[float]] = [[], []]
            for _ in range(5):
                for i, s in enumerate(sessions):
                    times[i] += session_run_ms(s, {"x": x}, args.iterations // 5)
            a, b = (statistics.median(t) for t in times)
            print(f"| {c} | {9 * c} | {a:.3f} | {b:.3f} | {a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
