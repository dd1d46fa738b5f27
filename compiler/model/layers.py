"""The framework-neutral layer list: its vocabulary, argument checks and shape inference.

Shapes are inferred here, in plain Python, from the recipe's input spec, so neither the
torch nor the Keras builder ever asks the user for an input channel or feature count.
Both builders and `lint` read the same `LayerSpec`s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from compiler.errors import Problem

ACTIVATIONS = ("relu", "relu6", "gelu", "sigmoid", "tanh", "silu", "elu", "leaky_relu", "softmax")

Shape = tuple[int, ...]  # without the batch dimension: (C, H, W) or (F,)


@dataclass(frozen=True)
class Arg:
    """One argument of a layer: its type check, default and a description of what is allowed."""

    kind: str  # "int", "float", "activation", "padding", "int_or_pair"
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class LayerSpec:
    """A validated layer: its type, resolved arguments and the shape it produces."""

    index: int
    type: str
    args: Mapping[str, Any]
    in_shape: Shape
    out_shape: Shape

    @property
    def path(self) -> str:
        return f"model.layers[{self.index}].{self.type}"


_CONV = {
    "filters": Arg("int", required=True),
    "kernel": Arg("int_or_pair", 3),
    "stride": Arg("int", 1),
    "padding": Arg("padding", "valid"),
    "activation": Arg("activation", None),
}
_POOL = {"size": Arg("int_or_pair", 2), "stride": Arg("int", None)}

VOCABULARY: dict[str, dict[str, Arg]] = {
    "conv2d": _CONV,
    "depthwise_conv2d": {k: v for k, v in _CONV.items() if k != "filters"} | {"multiplier": Arg("int", 1)},
    "maxpool2d": _POOL,
    "avgpool2d": _POOL,
    "global_avg_pool": {},
    "batchnorm": {"eps": Arg("float", 1e-3), "momentum": Arg("float", 0.99)},
    "dropout": {"rate": Arg("float", 0.5)},
    "flatten": {},
    "dense": {"units": Arg("int", required=True), "activation": Arg("activation", None)},
    "activation": {"fn": Arg("activation", required=True)},
    "residual": {"filters": Arg("int", required=True), "stride": Arg("int", 1)},
}

_ALLOWED_TEXT = {
    "int": "a positive integer",
    "float": "a number",
    "int_or_pair": "a positive integer or a [height, width] pair",
    "padding": "'same', 'valid' or a non-negative integer",
    "activation": "null or one of " + ", ".join(ACTIVATIONS),
}


def _check_arg(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool) and value > 0
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int_or_pair":
        if isinstance(value, Sequence) and not isinstance(value, str):
            return len(value) == 2 and all(_check_arg("int", v) for v in value)
        return _check_arg("int", value)
    if kind == "padding":
        return value in ("same", "valid") or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    if kind == "activation":
        return value is None or value in ACTIVATIONS
    raise AssertionError(kind)


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _conv_out(size: int, kernel: int, stride: int, padding: Any) -> int:
    if padding == "same":
        return math.ceil(size / stride)
    pad = 0 if padding == "valid" else int(padding)
    return (size + 2 * pad - kernel) // stride + 1


def _spatial(shape: Shape, kernel: Any, stride: int | None, padding: Any, channels: int) -> Shape:
    kh, kw = pair(kernel)
    s = stride or kh
    return (channels, _conv_out(shape[1], kh, s, padding), _conv_out(shape[2], kw, s, padding))


def _out_shape(kind: str, args: Mapping[str, Any], shape: Shape) -> Shape:
    """Shape after one layer (batch dimension excluded)."""
    if kind == "conv2d":
        return _spatial(shape, args["kernel"], args["stride"], args["padding"], args["filters"])
    if kind == "depthwise_conv2d":
        return _spatial(shape, args["kernel"], args["stride"], args["padding"], shape[0] * args["multiplier"])
    if kind in ("maxpool2d", "avgpool2d"):
        return _spatial(shape, args["size"], args["stride"] or pair(args["size"])[0], "valid", shape[0])
    if kind == "residual":
        return _spatial(shape, 3, args["stride"], "same", args["filters"])
    if kind == "global_avg_pool":
        return (shape[0],)
    if kind == "flatten":
        return (math.prod(shape),)
    if kind == "dense":
        return (args["units"],)
    return shape  # batchnorm, dropout, activation


_NEEDS_IMAGE = {"conv2d", "depthwise_conv2d", "maxpool2d", "avgpool2d", "global_avg_pool", "residual"}


def parse_layers(raw_layers: Sequence[Any], input_shape: Sequence[int]) -> tuple[list[LayerSpec], list[Problem]]:
    """Validate a recipe's layer list and infer every layer's output shape.

    Returns the specs of the layers that were valid up to the first shape problem, and every
    problem found (all argument problems, plus the first shape problem, which stops inference).
    """
    problems: list[Problem] = []
    specs: list[LayerSpec] = []
    shape: Shape = tuple(int(d) for d in input_shape)
    shape_ok = True
    for index, raw in enumerate(raw_layers):
        base = f"model.layers[{index}]"
        if not isinstance(raw, Mapping) or len(raw) != 1:
            problems.append(Problem(base, "each layer is a one-key mapping {type: {args}}", raw, "{type: {args}}",
                                    fix="write it as e.g. `- dense: {units: 10}`"))
            shape_ok = False
            continue
        (kind, given), = raw.items()
        given = {} if given is None else given
        if kind not in VOCABULARY:
            problems.append(Problem(base, "unknown layer type", kind, ", ".join(VOCABULARY),
                                    fix=_suggest(kind, VOCABULARY) or "pick a layer type from the list"))
            shape_ok = False
            continue
        if not isinstance(given, Mapping):
            problems.append(Problem(f"{base}.{kind}", "layer arguments must be a mapping", given, "{arg: value}",
                                    fix=f"write `- {kind}: {{...}}`"))
            shape_ok = False
            continue
        args, arg_problems = _resolve_args(f"{base}.{kind}", VOCABULARY[kind], given)
        problems += arg_problems
        if arg_problems:
            shape_ok = False
        if not shape_ok:
            continue
        shape_problem = _check_shape(f"{base}.{kind}", kind, shape)
        if shape_problem:
            problems.append(shape_problem)
            shape_ok = False
            continue
        out = _out_shape(kind, args, shape)
        if any(d <= 0 for d in out):
            problems.append(Problem(f"{base}.{kind}", f"the input {list(shape)} is too small for this layer; "
                                    f"it would produce {list(out)}", list(shape), "an input at least the layer's kernel/size",
                                    fix="use a smaller kernel/size, 'same' padding, or a larger input shape"))
            shape_ok = False
            continue
        specs.append(LayerSpec(index, kind, args, shape, out))
        shape = out
    return specs, problems


def _resolve_args(path: str, vocab: dict[str, Arg], given: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    problems = []
    for name in given:
        if name not in vocab:
            problems.append(Problem(f"{path}.{name}", "unknown layer argument", name, allowed=", ".join(vocab) or "none",
                                    fix=_suggest(name, vocab) or "remove it"))
    args = {}
    for name, arg in vocab.items():
        if name not in given:
            if arg.required:
                problems.append(Problem(f"{path}.{name}", "missing required layer argument", None,
                                        allowed=_ALLOWED_TEXT[arg.kind], fix=f"add `{name}: ...`"))
            args[name] = arg.default
            continue
        value = given[name]
        if isinstance(value, Sequence) and not isinstance(value, str):
            value = list(value)
        if not (value is None and not arg.required and arg.default is None) and not _check_arg(arg.kind, value):
            problems.append(Problem(f"{path}.{name}", "bad layer argument", value, _ALLOWED_TEXT[arg.kind],
                                    fix=f"give {name} {_ALLOWED_TEXT[arg.kind]}"))
        args[name] = value
    return args, problems


def _check_shape(path: str, kind: str, shape: Shape) -> Problem | None:
    if kind in _NEEDS_IMAGE and len(shape) != 3:
        return Problem(path, f"needs a (channels, height, width) input but gets {list(shape)}", list(shape),
                       "a (C, H, W) input",
                       fix="move it before `flatten`/`global_avg_pool`, or give the input shape as [batch, C, H, W]")
    if kind == "dense" and len(shape) != 1:
        return Problem(path, f"needs a flat input but gets {list(shape)}", list(shape), "a (features,) input",
                       fix="add `- flatten: {}` or `- global_avg_pool: {}` before it")
    if kind == "batchnorm" and len(shape) not in (1, 3):
        return Problem(path, f"needs a (C,) or (C, H, W) input but gets {list(shape)}", list(shape),
                       "a (C,) or (C, H, W) input", fix="place it after a layer with such an output")
    return None


def _suggest(name: str, choices: Mapping[str, Any] | Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def activation_of(spec: LayerSpec) -> str | None:
    return spec.args.get("fn") if spec.type == "activation" else spec.args.get("activation")


