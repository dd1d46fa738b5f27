"""What a newcomer asks first: `--help`, `--version` and `list`. Nothing heavy is imported: recipes are read as
text, versions from package metadata, passes and precisions from their registries."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from compiler import __version__
from compiler.backends.providers import SHORT_NAMES
from compiler.passes import REGISTRY
from compiler.plan import BACKEND_PRECISIONS, ONNXRUNTIME_GPU_PRECISIONS

KEY_TOOLS = ("hydra-core", "omegaconf", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx-graphsurgeon", "polygraphy",
             "torch", "tensorflow-cpu", "tensorflow", "tf2onnx", "transformers", "nvidia-modelopt", "tensorrt",
             "tensorrt-rtx-cu13-bindings")
MODES = {"compile": "lint, then every stage: train, export, surgery, [quantize], build, verify, report (default)",
         "lint": "check the recipe and the command line only; nothing is imported heavily, nothing written",
         "list": "list recipes, passes, precisions per backend, backends and providers"}
EXIT_CODES = {0: "compiled and verified", 1: "a stage failed", 2: "the recipe or command line is invalid; nothing ran",
              3: "built, but a verification gate failed (artifacts kept, report marked failed)"}
BACKENDS = {"auto": "TensorRT where it runs, else onnxruntime on the CUDA provider where onnxruntime-gpu and a GPU "
                    "are present, else onnxruntime on the CPU",
            "onnxruntime": "onnxruntime, on its providers (engine.onnxruntime.providers)",
            "tensorrt": "TensorRT through Polygraphy (needs the tensorrt extra and a CUDA GPU)",
            "tensorrt_rtx": "TensorRT-RTX (RTX GPUs; its runtime refuses compute capability 9.x)"}
PRECISIONS = {"fp32": "strict fp32: TF32 off in the reference and the engine", "tf32": "fp32 layers in TF32 (GPU, "
              "compute capability 8.0+)", "fp16": "half precision in the graph (fp32 kept where it overflows)",
              "bf16": "bfloat16 in the graph (ModelOpt AutoCast)", "int8": "Q/DQ int8, calibrated",
              "fp8": "Q/DQ fp8 (TensorRT, compute capability 8.9+)",
              "best": "build every precision that runs here; keep the fastest that passes its gates"}


def version_text() -> str:
    """The compiler's version and its key tools' (those installed)."""
    lines = [f"compiler {__version__}"]
    for dist in KEY_TOOLS:
        try:
            lines.append(f"  {dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            continue
    return "\n".join(lines)


def recipe_summaries() -> list[tuple[str, str]]:
    """(name, its first comment line) of every recipe, built-in and the user's (COMPILER_RECIPE_PATH)."""
    from compiler.recipe_source import recipe_dirs

    found: dict[str, str] = {}
    for folder in recipe_dirs():
        for path in sorted(Path(folder).glob("*.yaml")) if Path(folder).is_dir() else []:
            found.setdefault(path.stem, _first_comment(path))
    return sorted(found.items())


def _first_comment(path: Path) -> str:
    """The recipe's description: its leading comment lines up to the `Run:` line, joined into one sentence or
    more (a description that wraps onto a second line is not cut)."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        text = line.strip()
        if not text.startswith("#"):
            if text:
                break
            continue
        body = text.lstrip("#").strip()
        if "@package" in body:
            continue
        if not body or body.startswith("Run:"):
            if words:
                break
            continue
        words.append(body)
    return " ".join(words)


def help_text() -> str:
    width = max((len(n) for n, _ in recipe_summaries()), default=8)
    recipes = "\n".join(f"  {name:<{width}}  {summary}" for name, summary in recipe_summaries())
    modes = "\n".join(f"  mode={m:<8} {what}" for m, what in MODES.items())
    codes = "\n".join(f"  {code}  {what}" for code, what in EXIT_CODES.items())
    return f"""compiler: YAML recipe -> trained model -> cleaned ONNX -> validated engine, with a report.

Usage:
  python -m compiler recipe=NAME [key=value ...]        compile a recipe (override any key)
  python -m compiler recipe=NAME mode=lint              check it only (< 1 s, nothing written)
  python -m compiler -m recipe=A,B engine.precision=fp32,int8   a sweep: one job per combination
  python -m compiler recipe=onnx_file model.path=/abs/model.onnx   start from an existing ONNX file
  python -m compiler list                               recipes, passes, precisions, backends, providers
  python -m compiler --version                          versions of the compiler and its tools

Recipes (recipes/, and folders on COMPILER_RECIPE_PATH):
{recipes}

Modes:
{modes}

Exit codes:
{codes}

Options: every key with its default and meaning is in README.md, "Options"; `--hydra-help` shows Hydra's own
flags, `--cfg job recipe=NAME` the composed recipe, `--verbose` (or COMPILER_DEBUG=1) full tracebacks."""


def list_text() -> str:
    from compiler.stages.surgery import DEFAULT_PASSES

    out = ["Recipes:"] + [f"  {n:<18} {s}" for n, s in recipe_summaries()]
    out += ["", "Surgery passes (surgery.passes; * = in the default list):"]
    for name, info in REGISTRY.items():
        out.append(f"  {'*' if name in DEFAULT_PASSES else ' '} {name}: {info.summary}")
        out += [f"        {arg}: {declared.allowed()}; default {declared.default!r}" + (
            f" ({declared.help})" if declared.help else "") for arg, declared in info.args.items()]
    out += ["", "Precisions (engine.precision):"] + [f"  {p:<5} {what}" for p, what in PRECISIONS.items()]
    out += ["", "Backends (engine.backend) and the precisions each builds:"]
    for backend, what in BACKENDS.items():
        built = BACKEND_PRECISIONS.get(backend)
        if backend == "onnxruntime":
            line = f"CPU: {', '.join(built)}; CUDA provider: {', '.join(ONNXRUNTIME_GPU_PRECISIONS)}"
        else:
            line = ", ".join(built) if built else "as the backend it picks"
        out.append(f"  {backend:<12} {what}; builds {line}, best")
    out += ["", "onnxruntime providers (engine.onnxruntime.providers; short or full names):"]
    out += [f"  {short:<9} {full}" for short, full in SHORT_NAMES.items()]
    return "\n".join(out)
