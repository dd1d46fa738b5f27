"""Lint: every problem in a composed recipe, found before any heavy import or training.

`schema_problems` walks a raw (untyped) recipe against the dataclass schema and reports every
unknown key, wrong type and bad enum value with suggestions; `lint` checks missing values and
the cross-field rules of a typed recipe.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from compiler.cache import cache_root
from compiler.errors import Problem
from compiler.frameworks import adapter
from compiler.heavy import np
from compiler.iospec import io_problems
from compiler.model.layers import parse_layers
from compiler.packages import install_line, missing_package_of
from compiler.passes import parse_pass_list
from compiler.paths import writable
from compiler.plan import has_cuda_gpu, plan_problems
from compiler.security import target_problems
from compiler.serve.settings import serve_io_problems, serve_problems
from compiler.tracking import missing_packages

MIN_OPSET, MAX_OPSET = 11, 21
# words users type for an allowed value that difflib would not find (`gpu` is closest to `cpu`)
SYNONYMS = {"gpu": "cuda", "cuda:0": "cuda", "float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
            "ort": "onnxruntime", "trt": "tensorrt", "tf": "tensorflow", "keras": "tensorflow", "pytorch": "torch"}


# --- schema walk (raw recipes) -------------------------------------------------------------

def schema_problems(raw: Any, schema: type, path: str = "") -> list[Problem]:
    """Unknown keys, wrong types and bad enum values anywhere in `raw`, all of them."""
    if not isinstance(raw, Mapping):
        return [Problem(path or "<root>", "expected a mapping", raw, "key: value pairs",
                        fix="write it as a YAML mapping")]
    hints = typing.get_type_hints(schema)
    names = [f.name for f in fields(schema)]
    problems = []
    for key, value in raw.items():
        sub = f"{path}.{key}" if path else str(key)
        if not path and key == "recipe" and isinstance(value, Mapping):
            problems.append(Problem("recipe", "the recipe file's keys landed under `recipe:`: its first line is not "
                                    "`# @package _global_`", sorted(value)[:8], "a recipe file whose first line is "
                                    "`# @package _global_`", fix="make `# @package _global_` the recipe file's first "
                                    "line (every built-in recipe starts so)"))
            continue
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            if path and "." not in path and str(key) in _top_level_keys():  # `train.train`: a wrong header
                problems.append(Problem(sub, f"a recipe section inside `{path}`: the recipe file's `# @package` "
                                        f"header put its keys under `{path}:`", str(key), ", ".join(names),
                                        fix="make `# @package _global_` the recipe file's first line (every "
                                            "built-in recipe starts so)"))
                continue
            problems.append(Problem(sub, "unknown key", str(key), ", ".join(names),
                                    fix=f"did you mean '{close[0]}'?" if close else "remove it"))
            continue
        problems += _value_problems(value, hints[key], sub)
    return problems


_EXAMPLES = {int: "3", float: "0.5", bool: "true", str: "name"}


def _top_level_keys() -> set[str]:
    from compiler.schema import RecipeConfig

    return {f.name for f in fields(RecipeConfig)}


def _value_problems(value: Any, hint: Any, path: str) -> list[Problem]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return []
        return _value_problems(value, next(a for a in args if a is not type(None)), path)
    if value == "???" or hint is Any:
        return []
    if is_dataclass(hint):
        return schema_problems(value, hint, path)
    if isinstance(hint, type) and issubclass(hint, Enum):
        allowed = [m.name for m in hint]
        if value in allowed:
            return []
        synonym = SYNONYMS.get(str(value).lower())
        close = [synonym] if synonym in allowed else difflib.get_close_matches(str(value), allowed, n=1)
        return [Problem(path, "not an allowed value", value, ", ".join(allowed),
                        fix=f"did you mean '{close[0]}'?" if close else "use one of the allowed values")]
    if origin in (list, typing.List):
        if not isinstance(value, list):
            return [Problem(path, "expected a list", value, "a list [a, b, ...]", fix="write it in brackets: [a, b]")]
        item = args[0] if args else Any
        checked = is_dataclass(item) or (isinstance(item, type) and issubclass(item, Enum))
        return [p for i, v in enumerate(value) for p in _value_problems(v, item, f"{path}[{i}]")] if checked else []
    if origin in (dict, typing.Dict):
        return [] if isinstance(value, Mapping) else [Problem(path, "expected a mapping", value, "{key: value, ...}",
                                                                      fix="write it in braces: {key: value}")]
    checks = {int: _is_int, float: _is_float, bool: lambda v: isinstance(v, bool) or str(v).lower() in ("true", "false"),
              str: lambda v: not isinstance(v, (Mapping, list))}
    check = checks.get(hint)
    if check and not check(value):
        return [Problem(path, f"expected {hint.__name__}", value, f"a value of type {hint.__name__}",
                        fix=f"e.g. {path}={_EXAMPLES.get(hint, 'VALUE')}")]
    return []


def _is_int(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    try:
        return int(str(v)) == float(str(v))
    except ValueError:
        return False


def _is_float(v: Any) -> bool:
    try:
        float(str(v))
        return not isinstance(v, bool)
    except ValueError:
        return False


# --- what must hold before anything reads the recipe: sections present, interpolations resolvable -----------

def structure_problems(cfg: DictConfig) -> list[Problem]:
    """Sections deleted from the command line (`~model`) and interpolations that do not resolve
    (`${oc.env:NOPE}`, `${nope.key}`, `${train.batch_size}x` into an int), all of them, with their key paths.
    Every other check reads the recipe, so these come first."""
    from compiler.schema import RecipeConfig

    return _deleted_sections(cfg, RecipeConfig, "") + _interpolation_problems(cfg, "")


def _deleted_sections(cfg: DictConfig, schema: type, path: str) -> list[Problem]:
    problems = []
    for f in fields(schema):
        sub = f"{path}.{f.name}" if path else f.name
        if f.name not in cfg:
            problems.append(Problem(sub, "deleted (`~" + sub + "`), but every recipe has it", f"~{sub}",
                                    "setting the keys inside it", fix=f"remove `~{sub}` "
                                    "from the command line; to change it, set the keys inside it instead"))
            continue
        hint = typing.get_type_hints(schema).get(f.name)
        if is_dataclass(hint) and OmegaConf.is_dict(cfg._get_node(f.name)):
            problems += _deleted_sections(cfg._get_node(f.name), hint, sub)
    return problems


def _interpolation_problems(node: Any, path: str) -> list[Problem]:
    from omegaconf.errors import OmegaConfBaseException

    problems = []
    keys = list(node.keys()) if OmegaConf.is_dict(node) else range(len(node)) if OmegaConf.is_list(node) else []
    for key in keys:
        sub = f"{path}.{key}" if path else str(key)
        child = node._get_node(key)
        if OmegaConf.is_interpolation(node, key):
            try:
                child._dereference_node()
                node[key]  # resolves and converts to the key's type
            except OmegaConfBaseException as exc:
                problems.append(_interpolation_problem(sub, child._value(), exc))
        elif OmegaConf.is_config(child):
            problems += _interpolation_problems(child, sub)
    return problems


def _interpolation_problem(path: str, raw: Any, exc: Exception) -> Problem:
    import re

    text = str(exc).splitlines()[0]
    env = re.search(r"oc\.env:\s*([^,}\s]+)", str(raw))
    if env and "not found" in text:
        return Problem(path, f"the environment variable '{env.group(1)}' is not set", raw,
                       "an interpolation that resolves", fix=f"set it (export {env.group(1)}=...), or give a default: ${{oc.env:{env.group(1)},VALUE}}")
    missing = re.search(r"Interpolation key '([^']+)' not found", text)
    if missing:
        return Problem(path, f"the interpolation names '{missing.group(1)}', which is no key of the recipe", raw,
                       "${KEY} of an existing key", fix="name an existing key (e.g. ${train.batch_size}), or give a plain value")
    return Problem(path, f"the interpolation does not resolve to a valid value ({text.split(': ', 1)[-1]})", raw,
                   "a value of the key's type", fix="give a plain value of the key's type")


# --- cross-field rules (typed recipes) ------------------------------------------------------

def lint(cfg: DictConfig) -> list[Problem]:
    """Every problem of a typed recipe; an empty list means it may run."""
    problems = [Problem(key, "missing required value", None, "a value of the key's type", fix=f"set it in the recipe or on the command line: {key}=...")
                for key in sorted(OmegaConf.missing_keys(cfg))]
    if problems:
        return problems
    from compiler.schema import RecipeConfig

    # keys added on the command line (`+train.epocs=3`) pass Hydra's composition: check them like the rest
    problems += schema_problems(OmegaConf.to_container(cfg, resolve=False, enum_to_str=True), RecipeConfig)
    for check in (_seed, _framework_packages, _model, _label_output, _data, _train, _export, _surgery, _engine,
                  _verify, _serve, _cache, _tracking):
        problems += check(cfg)
    return problems


MAX_SEED = 2 ** 32 - 1   # numpy's and TensorFlow's seeds are unsigned 32-bit
MAX_EPOCHS = 10_000      # beyond this a typo is likelier than a plan; longer training is several runs


def _seed(cfg: DictConfig) -> list[Problem]:
    if not 0 <= cfg.seed <= MAX_SEED:
        return [Problem("seed", "not a valid random seed", cfg.seed, f"0..{MAX_SEED}", fix="e.g. seed=0")]
    return []


def _label_output(cfg: DictConfig) -> list[Problem]:
    """The output that labels score must be one of the model's outputs."""
    names = [o.name for o in cfg.model.outputs]
    label = cfg.model.label_output
    if label is None or not names or label in names:
        return []
    close = difflib.get_close_matches(str(label), names, n=1)
    return [Problem("model.label_output", "names no output of the model", label, ", ".join(names),
                    fix=f"did you mean '{close[0]}'?" if close else f"set model.label_output={names[0]}, or remove it")]


def _cache(cfg: DictConfig) -> list[Problem]:
    if not cfg.cache.enabled:
        return []
    root = cache_root(cfg.cache)
    ok, probe = writable(root)
    if ok:
        return []
    key = "cache.dir" if cfg.cache.dir else "cache.dir (default: $COMPILER_CACHE_DIR or ~/.cache/compiler)"
    return [Problem(key, f"cannot create the cache under {probe}", str(root), "a writable folder",
                    fix="set cache.dir=/a/writable/path, or cache.enabled=false")]


def _model(cfg: DictConfig) -> list[Problem]:
    spec = cfg.model
    if cfg.framework.value == "onnx":
        return io_problems(cfg, from_file=True)  # filled from model.path (onnx_io)
    problems = io_problems(cfg)
    if spec.path:
        problems.append(Problem("model.path", "only recipes with framework: onnx start from a file", spec.path,
                                "model.path with framework: onnx (recipe=onnx_file)", fix="set framework=onnx, or remove model.path"))
    layers, factory = list(spec.layers), spec.factory
    if factory is not None:
        raw = OmegaConf.to_container(factory) if OmegaConf.is_config(factory) else factory
        if layers:
            problems.append(Problem("model", "both `layers` and `factory` are set", ["layers", "factory"],
                                    "one of model.layers or model.factory", fix="keep one of them"))
        if not isinstance(raw, Mapping) or "_target_" not in raw:
            problems.append(Problem("model.factory", "needs a `_target_`", raw, "{_target_: package.factory, **kwargs}", fix="e.g. {_target_: torch.nn.Sequential}"))
        problems += target_problems(raw, "model.factory")
        return problems
    if not layers:
        return problems + [Problem("model.layers", "the model has no layers and no factory", [],
                                   "a list of layers, or model.factory", fix="list layers (see README, 'Recipe anatomy') or set model.factory")]
    sample, shape_problems = layer_input_shape(cfg)
    if shape_problems:
        return problems + shape_problems
    raw_layers = OmegaConf.to_container(spec.layers, resolve=True)
    specs, layer_problems = parse_layers(raw_layers, sample)
    problems += layer_problems
    classes = _expected_classes(cfg)
    if not layer_problems and specs and classes and specs[-1].out_shape != (classes,):
        problems.append(Problem(f"{specs[-1].path}", f"the model outputs {list(specs[-1].out_shape)} but the "
                                f"data has {classes} classes", list(specs[-1].out_shape), f"an output of [{classes}]", fix=f"end with `- dense: {{units: {classes}}}`"))
    return problems


def layer_input_shape(cfg: DictConfig) -> tuple[list[int], list[Problem]]:
    """A layer list takes one float input [batch, *sample]: its sample shape, or why the IO spec does not fit."""
    spec = cfg.model
    if len(spec.inputs) != 1 or len(spec.outputs) != 1:
        return [], [Problem("model.inputs", "a layer list has one input and one output",
                            [i.name for i in spec.inputs], "one input and one output", fix="use model.factory for a model with several inputs or outputs")]
    entry = spec.inputs[0]
    shape = list(entry.shape or [])
    sample = shape[1:]
    if (entry.dtype is not None and entry.dtype.value != "float32") or len(sample) not in (1, 3) \
            or not all(isinstance(d, int) and d > 0 for d in sample):
        return [], [Problem("model.inputs[0].shape", "a layer list takes a float32 input [batch, channels, height, "
                            "width] or [batch, features], its sample dims fixed", shape,
                            "[batch, C, H, W] or [batch, F] with fixed C, H, W, F", fix="e.g. shape: [batch, 1, 28, 28]; use model.factory for other inputs")]
    return sample, []


def _expected_classes(cfg: DictConfig) -> int | None:
    source = cfg.data.source.value
    if source == "image_folder" and cfg.data.path and Path(cfg.data.path).expanduser().is_dir():
        from compiler.data.sources import image_folder_classes

        return len(image_folder_classes(Path(cfg.data.path).expanduser()))
    return {"digits": 10, "synthetic": cfg.data.num_classes}.get(source)


def _data(cfg: DictConfig) -> list[Problem]:
    d, problems = cfg.data, []
    if not 0 < d.test_fraction < 1:
        problems.append(Problem("data.test_fraction", "must be between 0 and 1 (exclusive)", d.test_fraction,
                                "0 < fraction < 1", fix="e.g. data.test_fraction=0.2"))
    if d.limit is not None and d.limit < 10:
        problems.append(Problem("data.limit", "too few samples to split and train", d.limit, "null or >= 10",
                                fix="data.limit=null (all samples), or 10 or more"))
    if d.source.value == "npz":
        if not d.path:
            problems.append(Problem("data.path", "the npz source needs a file", None, "the path of an .npz file", fix="set data.path=/path/to/data.npz"))
        elif not Path(d.path).expanduser().is_file():
            problems.append(Problem("data.path", "file not found", d.path, "an existing .npz file", fix="give an existing .npz file"))
        else:
            problems += _npz_problems(Path(d.path).expanduser(), d.x_key, d.y_key, [i.name for i in cfg.model.inputs],
                                      labels_needed=cfg.framework.value != "onnx")
            if not problems:
                problems += npz_shape_problems(Path(d.path).expanduser(), cfg)
    if d.source.value == "image_folder":
        problems += _image_folder_problems(d.path)
    if d.path and d.source.value not in ("npz", "image_folder"):
        problems.append(Problem("data.path", f"only the npz and image_folder sources read a path; data.source is "
                                f"{d.source.value}, which would ignore it", d.path,
                                "data.path with data.source npz or image_folder", fix="set data.source=npz (or image_folder), or remove data.path"))
    if d.source.value == "tokens":
        problems += _tokens_problems(cfg)
    if d.source.value == "none" and cfg.framework.value != "onnx" and cfg.model.get("factory") is None:
        problems.append(Problem("data.source", "training needs data (only a model.factory model deploys untrained, "
                                "with the weights it is built with)", "none", "digits, npz, image_folder, synthetic, tokens",
                                fix="set data.source=digits (or npz with data.path=...)"))
    if d.source.value == "synthetic" and (d.num_classes < 2 or d.num_samples < 10):
        problems.append(Problem("data", "synthetic data needs num_classes >= 2 and num_samples >= 10",
                                {"num_classes": d.num_classes, "num_samples": d.num_samples},
                                "num_classes >= 2, num_samples >= 10", fix="e.g. data.num_classes=10 data.num_samples=1000"))
    return problems


def _tokens_problems(cfg: DictConfig) -> list[Problem]:
    """The token task needs an integer token input with a range, and names only inputs that exist."""
    d, inputs = cfg.data, {i.name: i for i in cfg.model.inputs}
    names = ", ".join(inputs) or "none"
    problems = []
    ids = inputs.get(d.token_input)
    if ids is None:
        problems.append(Problem("data.token_input", "no such input", d.token_input, names,
                                fix="name the model's token-id input"))
    elif ids.dtype is None or ids.dtype.value not in ("int64", "int32") or ids.range is None:
        problems.append(Problem("data.token_input", "the token input must be int64/int32 with a range", d.token_input,
                                "an int64 or int32 input with a range", fix=f"give '{d.token_input}' dtype: int64 and "
                                "range: [0, VOCAB]"))
    elif ids.range[1] - ids.range[0] < 2 * max(d.num_classes, 1):
        problems.append(Problem("data.token_input", "the vocabulary is too small for the token task's classes",
                                list(ids.range), f"a range of at least {2 * max(d.num_classes, 1)} token ids",
                                fix="widen the input's range"))
    if d.mask_input is not None and d.mask_input not in inputs:
        problems.append(Problem("data.mask_input", "no such input", d.mask_input, names, fix="or set it to null"))
    return problems


def _image_folder_problems(path: str | None) -> list[Problem]:
    if not path:
        return [Problem("data.path", "the image_folder source needs a folder", None, "a folder of class sub-folders",
                        fix="set data.path=/path/to/images")]
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return [Problem("data.path", "folder not found", path, "an existing folder", fix="give a folder with one sub-folder per class")]
    from compiler.data.sources import image_folder_classes

    if len(image_folder_classes(folder)) < 2:
        return [Problem("data.path", "needs at least two class sub-folders holding .png/.jpg/.jpeg images", path,
                        "a folder with one sub-folder of images per class", fix="add a sub-folder per class")]
    return []


def _npz_problems(path: Path, x_key: str, y_key: str, inputs: list[str], labels_needed: bool = True) -> list[Problem]:
    """Check the archive and its keys without loading any array: one array per input (by its name; a single
    input may use x_key instead) and the labels."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, OSError) as exc:
        return [Problem("data.path", f"not a readable .npz archive ({exc})", str(path), "an .npz file numpy reads",
                        fix="write it with numpy.savez(path, x=..., y=...)")]
    allowed = ", ".join(sorted(names)) or "none"
    problems = [Problem("data.y_key", "no such array in the .npz file (training needs labels)", y_key, allowed,
                        fix="name the labels array with data.y_key, or save one as 'y'")] \
        if y_key not in names and labels_needed else []
    if len(inputs) == 1 and inputs[0] not in names and x_key not in names:
        problems.append(Problem("data.x_key", "no such array in the .npz file", x_key, allowed,
                                fix=f"name the samples' array '{x_key}' or '{inputs[0]}'"))
    if len(inputs) > 1:
        problems += [Problem("data.path", f"no array for input '{name}' in the .npz file", str(path), allowed,
                             fix="save one array per input, named after it") for name in inputs if name not in names]
    return problems


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Array name -> (shape, dtype) of an .npz archive, read from the headers alone (no array is loaded)."""
    import zipfile


    out = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not name.endswith(".npy"):
                continue
            with archive.open(name) as f:
                version = np.lib.format.read_magic(f)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = reader(f)
            out[name[:-4]] = (tuple(shape), dtype)
    return out


def npz_shape_problems(path: Path, cfg: DictConfig) -> list[Problem]:
    """Each input's array against the IO spec: rank, fixed sizes, named dims within their [min, max], dtype kind."""
    headers, problems = npz_headers(path), []
    inputs = list(cfg.model.inputs)
    dims = OmegaConf.to_container(cfg.model.dims, resolve=True) if cfg.model.dims else {}
    for i, t in enumerate(inputs):
        key = t.name if t.name in headers or len(inputs) > 1 else cfg.data.x_key
        if key not in headers or t.shape is None:
            continue
        shape, dtype = headers[key]
        want = list(t.shape)
        where = f"data.path ('{key}' for input '{t.name}')"
        if len(shape) != len(want):
            problems.append(Problem(where, f"has shape {list(shape)}, rank {len(shape)}; the input is {want}, rank "
                                    f"{len(want)} (samples first)", str(path), f"rank {len(want)}: samples first",
                                    fix=f"save '{key}' with shape [samples, {', '.join(map(str, want[1:]))}]"))
            continue
        for axis, (size, declared) in enumerate(zip(shape[1:], want[1:]), start=1):
            if isinstance(declared, int) and size != declared:
                problems.append(Problem(where, f"axis {axis} has {size}, the input fixes it at {declared}", str(path),
                                        f"axis {axis} of size {declared}", fix=f"save '{key}' with axis {axis} of size {declared}"))
            elif isinstance(declared, str) and isinstance(dims.get(declared), list) and len(dims[declared]) == 3 \
                    and all(isinstance(v, int) for v in dims[declared]) \
                    and not dims[declared][0] <= size <= dims[declared][2]:
                low, _, high = dims[declared]
                problems.append(Problem(where, f"axis {axis} ('{declared}') has {size}, outside model.dims.{declared} "
                                        f"= [{low}, {dims[declared][1]}, {high}]", str(path), f"{low}..{high}",
                                        fix=f"widen it: model.dims.{declared}=[{min(low, size)},{dims[declared][1]},"
                                            f"{max(high, size)}]"))
        declared_dtype = t.dtype.value if t.dtype is not None else "float32"
        integer = declared_dtype in ("int64", "int32", "int8", "uint8", "bool")
        if integer != (dtype.kind in "biu"):
            problems.append(Problem(where, f"holds {dtype} values, the input takes {declared_dtype}", str(path), declared_dtype,
                                    fix=f"save '{key}' as {declared_dtype} (numpy: array.astype('{declared_dtype}'))"))
    return problems


def _positive(cfg: DictConfig, keys: list[str]) -> list[Problem]:
    problems = []
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is None or value <= 0:
            problems.append(Problem(key, "must be positive", value, "1, 2, ... (a number > 0)",
                                    fix=f"set {key} to a positive number"))
    return problems


def _train_device(cfg: DictConfig) -> list[Problem]:
    """The device exists, and the training precision runs on it with this framework (what train would refuse)."""
    t, problems = cfg.train, []
    if cfg.framework.value == "onnx":
        return []
    gpu = has_cuda_gpu()
    if t.device.value == "cuda" and not gpu:
        problems.append(Problem("train.device", "no CUDA GPU was found on this machine (no /dev/nvidia0, no "
                                "nvidia-smi)", "cuda", "auto, cpu, cuda", fix="use train.device=auto (or cpu)"))
    on_cuda = t.device.value == "cuda" or (t.device.value == "auto" and gpu)
    precision, framework = t.precision.value, adapter(cfg.framework.value)
    if precision not in framework.train_precisions:
        allowed = ", ".join(framework.train_precisions)
        problems.append(Problem("train.precision", f"{framework.label} train in {allowed} only", precision, allowed,
                                fix="use train.precision=fp32 (reduced precision belongs to the engine: engine.precision)"))
    elif precision == "fp16" and not on_cuda:
        problems.append(Problem("train.precision", "fp16 autocast with loss scaling needs a CUDA device, and training "
                                f"runs on the CPU here (train.device={t.device.value})", "fp16", "fp32, bf16",
                                fix="use train.precision=bf16 (or fp32) on the CPU"))
    return problems


def _framework_packages(cfg: DictConfig) -> list[Problem]:
    """The framework's own packages (its adapter's `packages`), which a torch-only install lacks."""
    name = cfg.framework.value
    framework = adapter(name)
    return [Problem("framework", f"{framework.label} need {package}, which is not installed", name,
                    f"torch, onnx, or {name} with {package} installed", fix=install_line(package))
            for package in framework.packages if missing_package_of(package)]


def _train(cfg: DictConfig) -> list[Problem]:
    t, problems = cfg.train, _positive(cfg, ["train.epochs", "train.batch_size", "train.optimizer.lr"]) + \
        _train_device(cfg)
    if t.epochs > MAX_EPOCHS:
        problems.append(Problem("train.epochs", "more epochs than a compile trains", t.epochs, f"1..{MAX_EPOCHS}",
                                fix=f"train.epochs={MAX_EPOCHS} or fewer; train longer in several runs (each one "
                                    "starts from the cache)"))
    devices = t.devices
    if not (devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1)):
        return problems + [Problem("train.devices", "a process count or auto", devices, "1, 2, ..., auto",
                                   fix="e.g. train.devices=auto")]
    if not adapter(cfg.framework.value).multi_process_training and (devices != 1 or t.nnodes != 1):
        problems.append(Problem("train.devices", "multi-device training is torch-only for now", devices, "1",
                                fix="remove train.devices/train.nnodes for TensorFlow recipes"))
    if t.nnodes < 1 or not 0 <= t.node_rank < t.nnodes:
        problems.append(Problem("train.node_rank", "a node index below train.nnodes", t.node_rank, f"0..{t.nnodes - 1}",
                                fix="give each node its index, 0 on the first"))
    host, sep, port = t.rdzv_endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        problems.append(Problem("train.rdzv_endpoint", "host:port", t.rdzv_endpoint, "HOST:PORT", fix="e.g. 10.0.0.1:29500"))
    elif t.nnodes > 1 and port == "0":
        problems.append(Problem("train.rdzv_endpoint", "several nodes need a fixed port on node 0", t.rdzv_endpoint,
                                "HOST:PORT with PORT > 0", fix="e.g. train.rdzv_endpoint=10.0.0.1:29500 on every node"))
    return problems


def _export(cfg: DictConfig) -> list[Problem]:
    opset = cfg.export.opset
    problems = []
    if not MIN_OPSET <= opset <= MAX_OPSET:
        problems.append(Problem("export.opset", "unsupported opset", opset, f"{MIN_OPSET}..{MAX_OPSET}",
                                fix="e.g. export.opset=17"))
    framework, exporter = adapter(cfg.framework.value), cfg.export.exporter.value
    package = framework.exporter_packages.get(exporter)
    if package and missing_package_of(package):
        problems.append(Problem("export.exporter", f"the {exporter} exporter needs {package}, which is not installed",
                                exporter, f"torchscript, or {exporter} with {package} installed",
                                fix=install_line(package) + ", or use export.exporter=torchscript"))
    layout = cfg.export.input_layout.value
    if layout not in framework.input_layouts:
        first = "channels-first" if framework.input_layouts == ("nchw",) else " or ".join(framework.input_layouts)
        problems.append(Problem("export.input_layout", f"{framework.name} models take {first} input", layout,
                                ", ".join(framework.input_layouts),
                                fix="remove export.input_layout (nhwc is for TensorFlow recipes)"))
    return problems


def _surgery(cfg: DictConfig) -> list[Problem]:
    return parse_pass_list(OmegaConf.to_container(cfg.surgery.passes, resolve=True))[1]


def _engine(cfg: DictConfig) -> list[Problem]:
    return plan_problems(cfg)


def _serve(cfg: DictConfig) -> list[Problem]:
    return serve_problems(cfg)


def resolved_problems(resolved: Any) -> list[Problem]:
    """The checks that read the run's one IOSpec, made once the recipe is resolved (recipe/resolved.py)."""
    return serve_io_problems(resolved.cfg.serve, resolved.io)


def _tracking(cfg: DictConfig) -> list[Problem]:
    import os


    problems = [Problem(key, f"{package} is not installed", True, f"false, or true with {package} installed", fix=install_line(package) + ", or set it to false")
                for key, package in missing_packages(cfg)]
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if cfg.tracking.mlflow and (uri.startswith("file:") or (uri and "://" not in uri)):
        problems.append(Problem("tracking.mlflow", f"MLFLOW_TRACKING_URI is a file store ({uri}), which MLflow 3 keeps "
                                "in maintenance mode and refuses for new stores", True, "an SQLite or http:// tracking URI",
                                fix="unset MLFLOW_TRACKING_URI (the default is outputs/mlflow.db, SQLite), or set it "
                                    "to sqlite:///path/mlflow.db or a server's http:// address"))
    return problems


def _verify(cfg: DictConfig) -> list[Problem]:
    v, problems = cfg.verify, []
    if v.metric is not None:
        raw = OmegaConf.to_container(v.metric) if OmegaConf.is_config(v.metric) else v.metric
        if not isinstance(raw, Mapping) or "_target_" not in raw:
            problems.append(Problem("verify.metric", "needs a `_target_`", raw, "{_target_: package.factory, **kwargs}",
                                    fix="e.g. verify.metric={_target_: mypkg.metrics.top5}, or remove it for top-1"))
        else:
            problems += target_problems(raw, "verify.metric")
    for key in ("atol", "rtol", "max_accuracy_drop"):
        if v[key] < 0:
            problems.append(Problem(f"verify.{key}", "must be >= 0", v[key], "0 or more", fix=f"e.g. verify.{key}=0"))
    if v.min_accuracy is not None and not 0 <= v.min_accuracy <= 1:
        problems.append(Problem("verify.min_accuracy", "a fraction", v.min_accuracy, "0..1, or null",
                                fix="e.g. verify.min_accuracy=0.9"))
    problems += _positive(cfg, ["verify.samples", "verify.latency.iterations"])
    if v.latency.warmup < 0:
        problems.append(Problem("verify.latency.warmup", "must be >= 0", v.latency.warmup, "0 or more",
                                fix="e.g. verify.latency.warmup=10"))
    bad = [b for b in v.latency.batch_sizes if not isinstance(b, int) or b < 1]
    if bad or not v.latency.batch_sizes:
        problems.append(Problem("verify.latency.batch_sizes", "a non-empty list of positive batch sizes",
                                list(v.latency.batch_sizes), "[1, 2, ...] of positive integers",
                                fix="e.g. verify.latency.batch_sizes=[1,32]"))
    return problems
