"""Precision into the graph with NVIDIA ModelOpt, TensorRT 11's documented path.

fp16/bf16: AutoCast (`convert_to_mixed_precision`), which keeps fp32 the nodes whose values on
calibration data exceed `data_max`, whose weights exceed `init_max`, and the excluded ones.
int8/fp8: ONNX PTQ (`quantize`), Q/DQ calibrated on the recipe's data, excluded nodes left unquantized.
`import modelopt.onnx` takes ~5 s, so it happens here, only in the stage that needs it.
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import re
from pathlib import Path

import numpy as np

from compiler.heavy import onnx
from compiler.onnx_files import save_model


def _exact(names: list[str]) -> list[str] | None:
    """ModelOpt takes node-name regexes; node names such as '/0/Conv.1' are meant literally."""
    return [f"^{re.escape(n)}$" for n in names] or None


@contextlib.contextmanager
def _quiet():
    """ModelOpt and its calibrators print progress bars and INFO lines; the compiler's log says what ran."""
    sink = _io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        logging.disable(previous)


def autocast(src: Path, dst: Path, precision: str, exclude: list[str], samples: dict, data_max: float,
             init_max: float, work: Path) -> None:
    """fp16 or bf16 weights and activations, model inputs/outputs kept in their types."""

    calibration = work / "autocast_inputs.npz"
    np.savez(calibration, **{k: np.ascontiguousarray(v) for k, v in samples.items()})
    with _quiet():
        from modelopt.onnx.autocast import convert_to_mixed_precision

        model = convert_to_mixed_precision(str(src), low_precision_type=precision, nodes_to_exclude=_exact(exclude),
                                           data_max=data_max, init_max=init_max, keep_io_types=True,
                                           calibration_data=str(calibration), providers=["cpu"])
    calibration.unlink()
    save_model(model if isinstance(model, onnx.ModelProto) else onnx.load(str(model)), dst)


def ptq(src: Path, dst: Path, precision: str, exclude: list[str], samples: dict, method: str,
        high_precision: str) -> None:
    """int8 or fp8 Q/DQ on every op ModelOpt quantizes for TensorRT; the rest in `high_precision`."""
    with _quiet():
        from modelopt.onnx.quantization import quantize

        quantize(str(src), quantize_mode=precision, calibration_data=samples, calibration_method=method,
                 calibration_eps=["cpu"], nodes_to_exclude=_exact(exclude), output_path=str(dst),
                 high_precision_dtype=high_precision, log_level="ERROR")


# recipe calibration methods -> ModelOpt's (ModelOpt has max and entropy for int8, max for fp8)
CALIBRATION = {"minmax": "max", "entropy": "entropy", "percentile": "max"}


def convert(src: Path, dst: Path, precision: str, exclude: list[str], samples: dict, quantize_cfg, high_precision: str,
            work: Path) -> None:
    if precision in ("fp16", "bf16"):
        autocast(src, dst, precision, exclude, samples, quantize_cfg.data_max, quantize_cfg.init_max, work)
    else:
        method = CALIBRATION[quantize_cfg.method.value] if precision == "int8" else "max"
        ptq(src, dst, precision, exclude, samples, method, high_precision)
