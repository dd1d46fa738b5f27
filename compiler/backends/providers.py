"""onnxruntime execution providers: short names, what the installed onnxruntime offers, and the default.

Read without importing onnxruntime (lint stays light): the GPU providers exist when the installed
distribution is onnxruntime-gpu, and run when a CUDA GPU is present too.
"""

from __future__ import annotations

import difflib
import functools
from typing import TYPE_CHECKING, Optional, Sequence

from compiler.errors import Problem

if TYPE_CHECKING:
    from compiler.numerics import MathMode

SHORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
FULL_NAMES = {full: short for short, full in SHORT_NAMES.items()}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
GPU_DISTRIBUTIONS = ("onnxruntime-gpu", "onnxruntime_gpu")


def canonical(name: str) -> Optional[str]:
    """The full provider name of a short or full name (any case), or None when it names none."""
    lowered = str(name).lower()
    for full, short in FULL_NAMES.items():
        if lowered in (short, full.lower()):
            return full
    return None


@functools.lru_cache(maxsize=None)
def onnxruntime_distribution() -> Optional[str]:
    """Which distribution provides the `onnxruntime` module (onnxruntime, onnxruntime-gpu, ...), or None."""
    import importlib.metadata as md

    names = md.packages_distributions().get("onnxruntime", [])
    gpu = [n for n in names if n.lower().replace("_", "-") == "onnxruntime-gpu"]
    return (gpu or names or [None])[0]


def gpu_onnxruntime() -> bool:
    return (onnxruntime_distribution() or "").lower().replace("_", "-") == "onnxruntime-gpu"


def installed_providers() -> tuple[str, ...]:
    """The providers the installed onnxruntime build carries (by its distribution)."""
    if gpu_onnxruntime():
        return ("CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider")
    return ("CPUExecutionProvider",)


def default_providers(gpu: bool) -> list[str]:
    """`engine.onnxruntime.providers: null`: CUDA then CPU where onnxruntime-gpu and a GPU are present."""
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu and gpu_onnxruntime() else ["CPUExecutionProvider"]


def uses_gpu(providers: Sequence[str]) -> bool:
    return any(p in GPU_PROVIDERS for p in providers)


def provider_problems(names: Sequence[str], gpu: bool, key: str = "engine.onnxruntime.providers") -> list[Problem]:
    """Unknown provider names (with the closest), and GPU providers where they cannot run."""
    allowed = ", ".join(list(SHORT_NAMES) + list(FULL_NAMES))
    problems = []
    for i, name in enumerate(names):
        full = canonical(name)
        if full is None:
            close = difflib.get_close_matches(str(name).lower(), [n.lower() for n in list(SHORT_NAMES) + list(FULL_NAMES)],
                                              n=1, cutoff=0.5)
            fixed = canonical(close[0]) if close else None
            problems.append(Problem(f"{key}[{i}]", "not an onnxruntime execution provider", name, allowed,
                                    fix=f"did you mean '{FULL_NAMES[fixed]}'?" if fixed else "use cpu, cuda or tensorrt"))
        elif full in GPU_PROVIDERS and not gpu_onnxruntime():
            problems.append(Problem(f"{key}[{i}]", f"{full} needs onnxruntime-gpu, and "
                                    f"{onnxruntime_distribution() or 'no onnxruntime'} is installed", name,
                                    "cpu (this onnxruntime build)", fix="pip uninstall -y onnxruntime && pip install -e '.[gpu]' (on a CUDA machine), "
                                        "or use engine.onnxruntime.providers=[cpu]"))
        elif full in GPU_PROVIDERS and not gpu:
            problems.append(Problem(f"{key}[{i}]", f"{full} needs a CUDA GPU, and none was found", name,
                                    "cpu (no GPU here)", fix="use engine.onnxruntime.providers=[cpu], or run on a GPU machine"))
    if not problems and len({canonical(n) for n in names}) != len(names):
        problems.append(Problem(key, "a provider is listed twice", list(names), "each provider once, in order of preference",
                                fix="remove the repeated name"))
    return problems


def resolve(names: Optional[Sequence[str]], gpu: bool) -> list[str]:
    """Full provider names in order: the recipe's, or the default for this machine."""
    if names is None:
        return default_providers(gpu)
    return [canonical(n) or str(n) for n in names]


def with_options(names: Sequence[str], cuda_options: dict, mode: "MathMode") -> list:
    """onnxruntime's `providers=` argument: the CUDA provider with the recipe's extra options and the math mode's
    TF32 option (onnxruntime's CUDA default is TF32 on: strict fp32 turns it off), the others by name."""
    cuda = {**{k: str(v) for k, v in (cuda_options or {}).items()}, **mode.onnxruntime_cuda_options()}
    return [(p, cuda) if p == "CUDAExecutionProvider" else p for p in names]
