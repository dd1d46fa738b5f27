"""Runners that time a model on the GPU with its inputs already there.

Per call from numpy arrays, a GPU engine's figure is mostly host<->device copies and launches (a b32
ResNet on an H200: fp16 0.52 ms against fp32 0.31 ms). These runners upload each feed once, bind
inputs and outputs on the device (onnxruntime's I/O binding, torch tensors on CUDA), synchronize
after every call, and time the copies on their own line (`copy_times`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from compiler.frameworks import in_math_mode

COPY_REPEATS = 5


class OrtDeviceRunner:
    """An onnxruntime session on the CUDA provider, fed through I/O binding: inputs uploaded once per feed,
    outputs left on the device. Synchronized: run_with_iobinding waits for the providers before it returns."""

    def __init__(self, load: Callable[[], Any], name: str, device_id: int = 0):
        self._load, self.name, self._device_id = load, name, device_id
        self._session, self._bindings = None, {}

    def __enter__(self) -> "OrtDeviceRunner":
        self._session = self._load()
        return self

    def __exit__(self, *exc) -> None:
        self._session, self._bindings = None, {}

    def _binding(self, feed: dict) -> Any:
        import onnxruntime as ort

        key = id(feed)
        if key not in self._bindings:
            binding = self._session.io_binding()
            values = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), "cuda", self._device_id)
                      for k, v in feed.items()}
            for name, value in values.items():
                binding.bind_ortvalue_input(name, value)
            for out in self._session.get_outputs():
                binding.bind_output(out.name, "cuda", self._device_id)
            self._bindings[key] = (binding, values, feed)  # keep the feed alive: its id stays unique
        return self._bindings[key][0]

    def infer(self, feed: dict, check_inputs: bool = False) -> None:
        self._session.run_with_iobinding(self._binding(feed))

    def copy_times(self, feed: dict) -> dict[str, float]:
        """Milliseconds to upload this feed's inputs and to download one call's outputs (median of a few)."""
        import onnxruntime as ort

        binding = self._binding(feed)
        self.infer(feed)
        up, down = [], []
        for _ in range(COPY_REPEATS):
            start = time.perf_counter()
            for v in feed.values():
                ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), "cuda", self._device_id)
            up.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            binding.copy_outputs_to_cpu()
            down.append((time.perf_counter() - start) * 1e3)
        return {"host_to_device_ms": float(np.median(up)), "device_to_host_ms": float(np.median(down))}


class OrtGraphRunner(OrtDeviceRunner):
    """An engine captured as CUDA graphs, timed as it ships: each feed's graph replayed, inputs and outputs left
    where they are on the device (backends/onnxruntime.CudaGraphSession)."""

    def __enter__(self) -> "OrtGraphRunner":
        from compiler.backends.onnxruntime import CudaGraphSession

        self._session = self._load()
        self._graphs = CudaGraphSession(self._session, self._device_id)
        return self

    def infer(self, feed: dict, check_inputs: bool = False) -> None:
        self._graphs.run(feed, fetch=False)

    def copy_times(self, feed: dict) -> dict[str, float]:
        return self._graphs.copy_times(feed, COPY_REPEATS)


class TorchDeviceRunner:
    """A torch module on CUDA, fed device tensors uploaded once per feed; synchronized after every call."""

    def __init__(self, module: Any, name: str, mode: Any):
        self._module, self.name, self._mode = module, name, mode
        self._tensors: dict[int, tuple[dict, dict]] = {}
        self._context = None

    def __enter__(self) -> "TorchDeviceRunner":
        self._context = in_math_mode(self._mode)
        self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._context.__exit__(*exc)
        self._tensors = {}

    def _on_device(self, feed: dict) -> dict:
        import torch

        key = id(feed)
        if key not in self._tensors:
            self._tensors[key] = ({k: torch.from_numpy(np.ascontiguousarray(v)).cuda() for k, v in feed.items()}, feed)
        return self._tensors[key][0]

    def infer(self, feed: dict, check_inputs: bool = False) -> None:
        import torch

        from compiler.frameworks.torch.runtime import predict_on_device

        predict_on_device(self._module, self._on_device(feed))
        torch.cuda.synchronize()

    def copy_times(self, feed: dict) -> dict[str, float]:
        import torch

        from compiler.frameworks.torch.runtime import predict_on_device

        outputs = predict_on_device(self._module, self._on_device(feed))
        torch.cuda.synchronize()
        up, down = [], []
        for _ in range(COPY_REPEATS):
            start = time.perf_counter()
            for v in feed.values():
                torch.from_numpy(np.ascontiguousarray(v)).cuda()
            torch.cuda.synchronize()
            up.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            for out in outputs:
                out.cpu()
            down.append((time.perf_counter() - start) * 1e3)
        return {"host_to_device_ms": float(np.median(up)), "device_to_host_ms": float(np.median(down))}


def gpu_conditions() -> dict:
    """The GPU's name, driver and clocks now, from nvidia-smi (empty without it)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return {}
    fields = ("name", "driver_version", "compute_cap", "clocks.sm", "clocks.mem", "clocks.max.sm", "temperature.gpu",
              "power.draw")
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not out:
        return {}
    values = [v.strip() for v in out[0].split(",")]
    return dict(zip((f.replace(".", "_") for f in fields), values))
