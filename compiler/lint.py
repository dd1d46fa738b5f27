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

from compiler.errors import Problem

MIN_OPSET, MAX_OPSET = 11, 21


# --- schema walk (raw recipes) -------------------------------------------------------------

def schema_problems(raw: Any, schema: type, path: str = "") -> list[Problem]:
    """Unknown keys, wrong types and bad enum values anywhere in `raw`, all of them."""
    if not isinstance(raw, Mapping):
        return [Problem(path or "<root>", "expected a mapping", raw)]
    hints = typing.get_type_hints(schema)
    names = [f.name for f in fields(schema)]
    problems = []
    for key, value in raw.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            problems.append(Problem(sub, "unknown key", allowed=", ".join(names),
                                    fix=f"did you mean '{close[0]}'?" if close else "remove it"))
            continue
        problems += _value_problems(value, hints[key], sub)
    return problems


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
        close = difflib.get_close_matches(str(value), allowed, n=1)
        return [Problem(path, "not an allowed value", value, ", ".join(allowed),
                        fix=f"did you mean '{close[0]}'?" if close else "")]
    if origin in (list, typing.List):
        if not isinstance(value, list):
            return [Problem(path, "expected a list", value)]
        item = args[0] if args else Any
        return [p for i, v in enumerate(value) for p in _value_problems(v, item, f"{path}[{i}]")] \
            if is_dataclass(item) else []
    if origin in (dict, typing.Dict):
        return [] if isinstance(value, Mapping) else [Problem(path, "expected a mapping", value)]
    checks = {int: _is_int, float: _is_float, bool: lambda v: isinstance(v, bool) or str(v).lower() in ("true", "false"),
              str: lambda v: not isinstance(v, (Mapping, list))}
    check = checks.get(hint)
    if check and not check(value):
        return [Problem(path, f"expected {hint.__name__}", value)]
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


# --- cross-field rules (typed recipes) ------------------------------------------------------

def lint(cfg: DictConfig) -> list[Problem]:
    """Every problem of a typed recipe; an empty list means it may run."""
    problems = [Problem(key, "missing required value", fix=f"set it in the recipe or on the command line: {key}=...")
                for key in sorted(OmegaConf.missing_keys(cfg))]
    if problems:
        return problems
    from compiler.schema import RecipeConfig

    # keys added on the command line (`+train.epocs=3`) pass Hydra's composition: check them like the rest
    problems += schema_problems(OmegaConf.to_container(cfg, resolve=False, enum_to_str=True), RecipeConfig)
    for check in (_model, _data, _train, _export, _surgery, _engine, _verify, _cache, _tracking):
        problems += check(cfg)
    return problems


def _cache(cfg: DictConfig) -> list[Problem]:
    from compiler.cache import cache_root
    from compiler.paths import writable

    if not cfg.cache.enabled:
        return []
    root = cache_root(cfg.cache)
    ok, probe = writable(root)
    if ok:
        return []
    key = "cache.dir" if cfg.cache.dir else "cache.dir (default: $COMPILER_CACHE_DIR or ~/.cache/compiler)"
    return [Problem(key, f"cannot create the cache under {probe}", str(root),
                    fix="set cache.dir=/a/writable/path, or cache.enabled=false")]


def _model(cfg: DictConfig) -> list[Problem]:
    from compiler.iospec import io_problems
    from compiler.model.layers import parse_layers
    from compiler.security import allowed_prefixes, is_allowed, targets_in

    spec = cfg.model
    if cfg.framework.value == "onnx":
        return io_problems(cfg, from_file=True)  # filled from model.path (onnx_io)
    problems = io_problems(cfg)
    if spec.path:
        problems.append(Problem("model.path", "only recipes with framework: onnx start from a file", spec.path,
                                fix="set framework=onnx, or remove model.path"))
    layers, factory = list(spec.layers), spec.factory
    if factory is not None:
        raw = OmegaConf.to_container(factory) if OmegaConf.is_config(factory) else factory
        if layers:
            problems.append(Problem("model", "both `layers` and `factory` are set", fix="keep one of them"))
        if not isinstance(raw, Mapping) or "_target_" not in raw:
            problems.append(Problem("model.factory", "needs a `_target_`", raw, fix="e.g. {_target_: torch.nn.Sequential}"))
        for path, target in targets_in(raw, "model.factory"):
            if not is_allowed(target):
                problems.append(Problem(path, "target is not on the allow-list", target, ", ".join(allowed_prefixes()),
                                        fix="add its prefix to COMPILER_ALLOWED_TARGETS in the environment "
                                            "(a recipe cannot widen the allow-list)"))
        return problems
    if not layers:
        return problems + [Problem("model.layers", "the model has no layers and no factory",
                                   fix="list layers (see README, 'Recipe anatomy') or set model.factory")]
    sample, shape_problems = layer_input_shape(cfg)
    if shape_problems:
        return problems + shape_problems
    raw_layers = OmegaConf.to_container(spec.layers, resolve=True)
    specs, layer_problems = parse_layers(raw_layers, sample)
    problems += layer_problems
    classes = _expected_classes(cfg)
    if not layer_problems and specs and classes and specs[-1].out_shape != (classes,):
        problems.append(Problem(f"{specs[-1].path}", f"the model outputs {list(specs[-1].out_shape)} but the "
                                f"data has {classes} classes", fix=f"end with `- dense: {{units: {classes}}}`"))
    return problems


def layer_input_shape(cfg: DictConfig) -> tuple[list[int], list[Problem]]:
    """A layer list takes one float input [batch, *sample]: its sample shape, or why the IO spec does not fit."""
    spec = cfg.model
    if len(spec.inputs) != 1 or len(spec.outputs) != 1:
        return [], [Problem("model.inputs", "a layer list has one input and one output",
                            [i.name for i in spec.inputs], fix="use model.factory for a model with several inputs or outputs")]
    entry = spec.inputs[0]
    shape = list(entry.shape or [])
    sample = shape[1:]
    if (entry.dtype is not None and entry.dtype.value != "float32") or len(sample) not in (1, 3) \
            or not all(isinstance(d, int) and d > 0 for d in sample):
        return [], [Problem("model.inputs[0].shape", "a layer list takes a float32 input [batch, channels, height, "
                            "width] or [batch, features], its sample dims fixed", shape,
                            fix="e.g. shape: [batch, 1, 28, 28]; use model.factory for other inputs")]
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
        problems.append(Problem("data.test_fraction", "must be between 0 and 1 (exclusive)", d.test_fraction))
    if d.limit is not None and d.limit < 10:
        problems.append(Problem("data.limit", "too few samples to split and train", d.limit, "null or >= 10"))
    if d.source.value == "npz":
        if not d.path:
            problems.append(Problem("data.path", "the npz source needs a file", fix="set data.path=/path/to/data.npz"))
        elif not Path(d.path).expanduser().is_file():
            problems.append(Problem("data.path", "file not found", d.path, fix="give an existing .npz file"))
        else:
            problems += _npz_problems(Path(d.path).expanduser(), d.x_key, d.y_key, [i.name for i in cfg.model.inputs])
    if d.source.value == "image_folder":
        problems += _image_folder_problems(d.path)
    if d.path and d.source.value not in ("npz", "image_folder"):
        problems.append(Problem("data.path", f"only the npz and image_folder sources read a path; data.source is "
                                f"{d.source.value}, which would ignore it", d.path,
                                fix="set data.source=npz (or image_folder), or remove data.path"))
    if d.source.value == "tokens":
        problems += _tokens_problems(cfg)
    if d.source.value == "none" and cfg.framework.value != "onnx":
        problems.append(Problem("data.source", "training needs data", "none", "digits, npz, synthetic"))
    if d.source.value == "synthetic" and (d.num_classes < 2 or d.num_samples < 10):
        problems.append(Problem("data", "synthetic data needs num_classes >= 2 and num_samples >= 10",
                                {"num_classes": d.num_classes, "num_samples": d.num_samples}))
    return problems


def _tokens_problems(cfg: DictConfig) -> list[Problem]:
    """The token task needs an integer token input with a range, and names only inputs that exist."""
    d, inputs = cfg.data, {i.name: i for i in cfg.model.inputs}
    names = ", ".join(inputs) or "none"
    problems = []
    ids = inputs.get(d.token_input)
    if ids is None:
        problems.append(Problem("data.token_input", "no such input", d.token_input, names))
    elif ids.dtype is None or ids.dtype.value not in ("int64", "int32") or ids.range is None:
        problems.append(Problem("data.token_input", "the token input must be int64/int32 with a range", d.token_input))
    elif ids.range[1] - ids.range[0] < 2 * max(d.num_classes, 1):
        problems.append(Problem("data.token_input", "the vocabulary is too small for the token task's classes",
                                list(ids.range), fix="widen the input's range"))
    if d.mask_input is not None and d.mask_input not in inputs:
        problems.append(Problem("data.mask_input", "no such input", d.mask_input, names, fix="or set it to null"))
    return problems


def _image_folder_problems(path: str | None) -> list[Problem]:
    if not path:
        return [Problem("data.path", "the image_folder source needs a folder", fix="set data.path=/path/to/images")]
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return [Problem("data.path", "folder not found", path, fix="give a folder with one sub-folder per class")]
    from compiler.data.sources import image_folder_classes

    if len(image_folder_classes(folder)) < 2:
        return [Problem("data.path", "needs at least two class sub-folders holding .png/.jpg/.jpeg images", path)]
    return []


def _npz_problems(path: Path, x_key: str, y_key: str, inputs: list[str]) -> list[Problem]:
    """Check the archive and its keys without loading any array: one array per input (by its name; a single
    input may use x_key instead) and the labels."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, OSError) as exc:
        return [Problem("data.path", f"not a readable .npz archive ({exc})", str(path),
                        fix="write it with numpy.savez(path, x=..., y=...)")]
    allowed = ", ".join(sorted(names)) or "none"
    problems = [Problem("data.y_key", "no such array in the .npz file", y_key, allowed)] if y_key not in names else []
    if len(inputs) == 1 and inputs[0] not in names and x_key not in names:
        problems.append(Problem("data.x_key", "no such array in the .npz file", x_key, allowed,
                                fix=f"name the samples' array '{x_key}' or '{inputs[0]}'"))
    if len(inputs) > 1:
        problems += [Problem("data.path", f"no array for input '{name}' in the .npz file", str(path), allowed,
                             fix="save one array per input, named after it") for name in inputs if name not in names]
    return problems


def _positive(cfg: DictConfig, keys: list[str]) -> list[Problem]:
    problems = []
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is None or value <= 0:
            problems.append(Problem(key, "must be positive", value))
    return problems


def _train(cfg: DictConfig) -> list[Problem]:
    t, problems = cfg.train, _positive(cfg, ["train.epochs", "train.batch_size", "train.optimizer.lr"])
    devices = t.devices
    if not (devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1)):
        return problems + [Problem("train.devices", "a process count or auto", devices, "1, 2, ..., auto")]
    if cfg.framework.value == "tensorflow" and (devices != 1 or t.nnodes != 1):
        problems.append(Problem("train.devices", "multi-device training is torch-only for now", devices, "1",
                                fix="remove train.devices/train.nnodes for TensorFlow recipes"))
    if t.nnodes < 1 or not 0 <= t.node_rank < t.nnodes:
        problems.append(Problem("train.node_rank", "a node index below train.nnodes", t.node_rank, f"0..{t.nnodes - 1}"))
    host, sep, port = t.rdzv_endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        problems.append(Problem("train.rdzv_endpoint", "host:port", t.rdzv_endpoint, fix="e.g. 10.0.0.1:29500"))
    elif t.nnodes > 1 and port == "0":
        problems.append(Problem("train.rdzv_endpoint", "several nodes need a fixed port on node 0", t.rdzv_endpoint,
                                fix="e.g. train.rdzv_endpoint=10.0.0.1:29500 on every node"))
    return problems


def _export(cfg: DictConfig) -> list[Problem]:
    opset = cfg.export.opset
    problems = []
    if not MIN_OPSET <= opset <= MAX_OPSET:
        problems.append(Problem("export.opset", "unsupported opset", opset, f"{MIN_OPSET}..{MAX_OPSET}"))
    if cfg.framework.value == "torch" and cfg.export.input_layout.value != "nchw":
        problems.append(Problem("export.input_layout", "torch models take channels-first input", "nhwc", "nchw",
                                fix="remove export.input_layout (nhwc is for TensorFlow recipes)"))
    return problems


def _surgery(cfg: DictConfig) -> list[Problem]:
    from compiler.passes import parse_pass_list

    return parse_pass_list(OmegaConf.to_container(cfg.surgery.passes, resolve=True))[1]


def _engine(cfg: DictConfig) -> list[Problem]:
    from compiler.plan import plan_problems

    return plan_problems(cfg)


def _tracking(cfg: DictConfig) -> list[Problem]:
    from compiler.tracking import missing_packages

    return [Problem(key, f"{package} is not installed", True, fix='pip install -e ".[tracking]", or set it to false')
            for key, package in missing_packages(cfg)]


def _verify(cfg: DictConfig) -> list[Problem]:
    v, problems = cfg.verify, []
    for key in ("atol", "rtol", "max_accuracy_drop"):
        if v[key] < 0:
            problems.append(Problem(f"verify.{key}", "must be >= 0", v[key]))
    if v.min_accuracy is not None and not 0 <= v.min_accuracy <= 1:
        problems.append(Problem("verify.min_accuracy", "a fraction", v.min_accuracy, "0..1"))
    problems += _positive(cfg, ["verify.samples", "verify.latency.iterations"])
    if v.latency.warmup < 0:
        problems.append(Problem("verify.latency.warmup", "must be >= 0", v.latency.warmup))
    bad = [b for b in v.latency.batch_sizes if not isinstance(b, int) or b < 1]
    if bad or not v.latency.batch_sizes:
        problems.append(Problem("verify.latency.batch_sizes", "a non-empty list of positive batch sizes",
                                list(v.latency.batch_sizes)))
    return problems
