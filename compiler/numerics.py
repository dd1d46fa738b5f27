"""The one numerics policy: fp32 means strict fp32.

TF32 is a reduced precision, like fp16: it rounds fp32 matmul and convolution inputs to a 10-bit mantissa
on Ampere and newer GPUs, which torch's cuDNN convolutions, onnxruntime's CUDA provider and TensorRT's
builder all do by default. So the framework reference, every reference run in verification and every
fp32 engine run with it off, and `engine.precision: tf32` asks for it explicitly (and is gated like fp16).

`MathMode` is the one object that says so: it names the onnxruntime CUDA provider option and TensorRT flag for
the mode, and `frameworks.in_math_mode` sets and restores the frameworks' globals for it (torch's TF32 and cuDNN
flags, TensorFlow's TF32 switch).
"""

from __future__ import annotations

from dataclasses import dataclass

# the math mode each engine precision runs in (what the report names per ledger row)
MATH_MODES = {"fp32": "strict fp32", "tf32": "tf32", "fp16": "fp16", "bf16": "bf16", "int8": "int8",
              "fp8": "fp8", "best": "strict fp32"}


@dataclass(frozen=True)
class MathMode:
    tf32: bool = False

    @property
    def name(self) -> str:
        return "tf32" if self.tf32 else "strict fp32"

    def onnxruntime_cuda_options(self) -> dict[str, str]:
        """The CUDA provider's options for this mode (its own default is TF32 on)."""
        return {"use_tf32": "1" if self.tf32 else "0"}

    def tensorrt_tf32(self) -> bool:
        """TensorRT's TF32 builder flag (on by TensorRT's own default)."""
        return self.tf32


STRICT_FP32 = MathMode(tf32=False)


def for_precision(precision: str) -> MathMode:
    """The math mode of an engine precision: only `tf32` lets fp32 layers round to TF32."""
    return MathMode(tf32=precision == "tf32")
