"""The resolved IO spec: every input and output, the named dims and the optimization profiles.

Lint checks `model.inputs/outputs/dims/profiles` (`io_problems`) and, for ONNX recipes, fills them
from the file (`onnx_io`); then `IOSpec.from_cfg` builds the run's one spec as the recipe is resolved
(recipe/resolved.py), and every stage reads that one (`Resolved.io`, `StageContext.io`).
Export dynamic axes, TensorRT profiles, verification and latency shapes, random and calibration
inputs, and the NCHW/NHWC layout all derive from here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from compiler import dims as dim_rules
from compiler.dims import evaluate, is_expression, order, range_problems, resolve
from compiler.errors import Problem
from compiler.memory import GIB, INPUT_SHARE, batch_bytes, machine_bytes

if TYPE_CHECKING:
    from omegaconf import DictConfig
    import numpy as np

INT_DTYPES = ("int64", "int32", "int8", "uint8", "bool")
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
POSITIONS = ("min", "opt", "max")
Range = tuple[int, int, int]


def channels_last(shape: Sequence) -> tuple:
    """[N, C, H, W] -> [N, H, W, C] (any other rank is left as it is): the one place layouts are converted."""
    s = tuple(shape)
    return (s[0], s[2], s[3], s[1]) if len(s) == 4 else s


def channels_first(shape: Sequence) -> tuple:
    s = tuple(shape)
    return (s[0], s[3], s[1], s[2]) if len(s) == 4 else s


def to_channels_last(x: "np.ndarray") -> "np.ndarray":
    import numpy as np

    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


@dataclass(frozen=True)
class Tensor:
    """One input as the engine sees it: `shape` is in the engine's layout, batch included."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    range: tuple[float | str, float | str] | None = None   # a bound may name a dim (an index input: [0, batch])
    channels_last: bool = False   # the engine takes NHWC; data and the recipe's shape are NCHW
    values: tuple | None = None   # the only values it takes (enum-like inputs)

    @property
    def is_int(self) -> bool:
        return self.dtype in INT_DTYPES

    def data_shape(self, engine_shape: Sequence[int]) -> tuple[int, ...]:
        """An engine-layout shape in the recipe's (channels-first) layout, where data is made."""
        return channels_first(engine_shape) if self.channels_last else tuple(engine_shape)

    def to_engine(self, x: "np.ndarray") -> "np.ndarray":
        """Samples in the recipe's channels-first layout -> this input's engine layout."""
        return to_channels_last(x) if self.channels_last else x

    def keras_shape(self) -> tuple:
        """The shape Keras (always channels last) is called with, named dims as None."""
        shape = [d if isinstance(d, int) else None for d in self.data_shape(self.shape)]
        return channels_last(shape)


@dataclass(frozen=True)
class Output:
    name: str
    atol: float | None = None
    rtol: float | None = None
    rel_l2: float | None = None    # agreement-gate budgets (verify/agreement.py)
    cosine: float | None = None
    argmax: float | None = None


@dataclass(frozen=True)
class IOSpec:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Output, ...]
    # one dict per profile: dim name -> (min, opt, max); explicit per-input shapes override per profile
    profiles: tuple[dict[str, Range], ...] = ({},)
    explicit: tuple[dict[str, tuple[list[int], list[int], list[int]]], ...] = ({},)
    relations: dict[str, str] = field(default_factory=dict)   # dim name -> expression of others (dims.py)

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> "IOSpec":
        """The spec of a linted (and, for ONNX recipes, filled-in) recipe."""
        model = cfg.model
        nhwc = cfg.framework.value == "tensorflow" and cfg.export.input_layout.value == "nhwc"
        inputs = []
        for spec in model.inputs:
            shape = tuple(_dim(d) for d in spec.shape)
            last = nhwc and len(shape) == 4
            if last:
                shape = channels_last(shape)
            dtype = spec.dtype.value if spec.dtype is not None else "float32"
            value_range = tuple(_dim(v) if isinstance(v, str) else v for v in spec.range) if spec.range is not None \
                else ((0, 2) if dtype == "bool" else None)
            values = tuple(input_values(spec)) if input_values(spec) is not None else None
            inputs.append(Tensor(spec.name, dtype, shape, value_range, last, values))
        outputs = tuple(Output(o.name, o.atol, o.rtol, o.rel_l2, o.cosine, o.argmax) for o in model.outputs)

        dims = _plain(model.dims)
        profiles, explicit = _profiles(dims, _plain(model.profiles))
        relations = {k: str(v) for k, v in dims.items() if is_expression(v)}
        return cls(tuple(inputs), outputs, profiles, explicit, relations)

    @classmethod
    def single(cls, sample_shape: Sequence[int], name: str = "input", output: str = "logits") -> "IOSpec":
        """One float32 input [batch, *sample_shape] and one output: the shape of a layer-list model."""
        return cls((Tensor(name, "float32", ("batch", *sample_shape)),), (Output(output),), ({"batch": (1, 32, 64)},))

    # --- names and dims -----------------------------------------------------------------------

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def input(self, name: str) -> Tensor:
        return next(t for t in self.inputs if t.name == name)

    @property
    def batch_dim(self) -> str | None:
        """The dim every input starts with, when they share a named one: what latency batch sizes vary."""
        firsts = {t.shape[0] for t in self.inputs if t.shape}
        return firsts.pop() if len(firsts) == 1 and isinstance(next(iter(firsts)), str) else None

    @property
    def fixed_batch(self) -> int | None:
        firsts = {t.shape[0] for t in self.inputs if t.shape}
        return firsts.pop() if len(firsts) == 1 and isinstance(next(iter(firsts)), int) else None

    def batch_range(self, profile: int = 0) -> Range:
        if self.batch_dim:
            return self.profiles[profile][self.batch_dim]
        b = self.fixed_batch or 1
        return (b, b, b)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """{input: {axis: dim name}} for TorchScript export (outputs get the batch dim when there is one)."""
        axes = {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in self.inputs}
        axes = {k: v for k, v in axes.items() if v}
        if self.batch_dim:
            axes.update({o.name: {0: self.batch_dim} for o in self.outputs})
        return axes

    # --- shapes -------------------------------------------------------------------------------

    def shapes(self, profile: int = 0, position: str = "opt", batch: int | None = None) -> dict[str, tuple[int, ...]]:
        """Every input's concrete shape at a profile's min/opt/max (batch dim optionally set)."""
        index = POSITIONS.index(position)
        result = {}
        for t in self.inputs:
            if t.name in self.explicit[profile]:
                shape = list(self.explicit[profile][t.name][index])
            else:
                shape = [d if isinstance(d, int) else self.profiles[profile][d][index] for d in t.shape]
            if batch is not None and self.batch_dim and shape and t.shape[0] == self.batch_dim:
                shape[0] = batch
            result[t.name] = tuple(shape)
        return result

    def shapes_at(self, sizes: Mapping[str, int], profile: int = 0) -> dict[str, tuple[int, ...]]:
        """Every input's shape with the given dims at these sizes, the others at the profile's opt, and each
        related dim (`total: past + seq`) evaluated from them."""
        values = {name: r[1] for name, r in self.profiles[profile].items()}
        values.update(sizes)
        for name in order(self.relations):
            values[name] = evaluate(self.relations[name], values)
        return {t.name: tuple(d if isinstance(d, int) else values[d] for d in t.shape) for t in self.inputs}

    def engine_profiles(self) -> list[dict[str, tuple[list[int], list[int], list[int]]]]:
        """TensorRT optimization profiles: per input, (min, opt, max) full shapes."""
        result = []
        for i in range(len(self.profiles)):
            per = [self.shapes(i, p) for p in POSITIONS]
            result.append({t.name: tuple(list(s[t.name]) for s in per) for t in self.inputs})
        return result

    def check_shapes(self, profiles: Sequence[int] | None = None) -> Iterator[tuple[str, dict[str, tuple[int, ...]]]]:
        """(label, shapes) at the min, opt and max of every profile, each distinct shape once: the verification
        shapes. Positions that coincide share a label ("min=opt=max" for a fixed shape)."""
        groups: dict[tuple, list[str]] = {}
        for i in (range(len(self.profiles)) if profiles is None else profiles):
            for position in POSITIONS:
                shapes = self.shapes(i, position)
                prefix = f"profile {i} " if len(self.profiles) > 1 else ""
                labels = groups.setdefault(tuple(sorted(shapes.items())), [])
                labels.append(position if labels and labels[0].startswith(prefix) else prefix + position)
        for key, labels in groups.items():
            yield "=".join(labels), dict(key)

    def latency_batches(self, wanted: Sequence[int]) -> list[int]:
        """The recipe's latency batch sizes within the engine's batch range (a fixed batch: its own)."""
        low, _, high = self.batch_range()
        if not self.batch_dim:
            return [low]
        chosen = sorted({min(max(b, low), high) for b in wanted})
        return chosen or [low]

    # --- data -------------------------------------------------------------------------------

    def random_feed(self, rng: "np.random.Generator", shapes: Mapping[str, Sequence[int]]) -> dict[str, "np.ndarray"]:
        """Valid random inputs: integers within each input's range (a bound naming a dim takes its size in these
        shapes), one of its `values` where it has them, floats standard normal (or in range)."""
        sizes = self.dim_sizes(shapes)
        return {t.name: random_array(rng, t, shapes[t.name], sizes) for t in self.inputs}

    def dim_sizes(self, shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
        """Each named dim's size in these concrete shapes (read off the inputs that use it)."""
        sizes: dict[str, int] = {}
        for t in self.inputs:
            for axis, d in enumerate(t.shape):
                if isinstance(d, str) and axis < len(shapes[t.name]):
                    sizes.setdefault(d, int(shapes[t.name][axis]))
        return sizes

    def to_engine(self, samples: Mapping[str, "np.ndarray"]) -> dict[str, "np.ndarray"]:
        return {t.name: t.to_engine(samples[t.name]) for t in self.inputs}


def label_output(cfg: DictConfig, io: IOSpec) -> str:
    """The output that labels score (training's loss, the metric): `model.label_output`, else the first."""
    return cfg.model.label_output or io.output_names[0]


def random_array(rng: "np.random.Generator", t: Tensor, shape: Sequence[int],
                 sizes: Mapping[str, int] | None = None) -> "np.ndarray":
    import numpy as np

    if t.dtype == "string":  # one of the strings it takes (lint made sure it has them)
        return rng.choice(np.asarray(list(t.values), dtype=object), size=tuple(shape))
    dtype = np.dtype(t.dtype) if t.dtype != "bfloat16" else np.dtype("float32")
    if t.values is not None:
        return rng.choice(np.asarray(t.values, dtype=dtype), size=tuple(shape))
    low, high = ((_bound(v, sizes) for v in t.range) if t.range is not None else (0, 2))
    if t.is_int:
        return rng.integers(int(low), max(int(high), int(low) + 1), size=tuple(shape)).astype(dtype)
    if t.range is not None:
        return rng.uniform(low, high, size=tuple(shape)).astype(dtype)
    return rng.standard_normal(tuple(shape)).astype(dtype)


def _bound(value: Any, sizes: Mapping[str, int] | None) -> float:
    """A range bound: a number, or the size of the dim it names in the current shapes."""
    if isinstance(value, str):
        if not sizes or value not in sizes:
            raise ValueError(f"range bound '{value}' names a dim that no input shape uses")
        return sizes[value]
    return value


def slice_batch(feed: Mapping[str, "np.ndarray"], start: int, stop: int) -> dict[str, "np.ndarray"]:
    import numpy as np

    return {k: np.ascontiguousarray(v[start:stop]) for k, v in feed.items()}


def batch_size(feed: Mapping[str, "np.ndarray"]) -> int:
    return len(next(iter(feed.values()))) if feed else 0


# --- helpers -------------------------------------------------------------------------------

def _dim(d: Any) -> int | str:
    text = str(d)
    return int(text) if text.lstrip("-").isdigit() else text


def _plain(node: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _profiles(dims: Mapping[str, Any], profiles: Sequence[Mapping[str, Any]]):
    """Per profile, every dim's (min, opt, max), expressions evaluated after the profile's own ranges (dims.py)."""
    if not profiles:
        return (resolve(dims),), ({},)
    ranges, explicit = [], []
    for p in profiles:
        ranges.append(resolve({**dims, **{k: r for k, r in p.items() if not isinstance(r, Mapping)}}))
        explicit.append({k: tuple(list(r[pos]) for pos in POSITIONS) for k, r in p.items() if isinstance(r, Mapping)})
    return tuple(ranges), tuple(explicit)


# --- lint ----------------------------------------------------------------------------------

@dataclass
class _Checker:
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: str, message: str, value: Any = None, allowed: str = "", fix: str = "") -> None:
        self.problems.append(Problem(path, message, value, allowed, fix))


def io_problems(cfg: DictConfig, from_file: bool = False) -> list[Problem]:
    """Every cross-reference of the IO spec: dim names, ranges, profiles, dtypes, output names."""
    c = _Checker()
    model = cfg.model

    dims = _plain(model.dims) or {}
    firsts = {_dim(i.shape[0]) for i in model.inputs if i.shape}
    c.problems += dim_rules.problems(dims, {d for d in firsts if isinstance(d, str)} or {"batch"})
    names = [i.name for i in model.inputs]
    if not model.inputs and not from_file:
        c.add("model.inputs", "a trained model needs at least one input", [], "a list of {name, shape, dtype}",
              fix="e.g. 'model.inputs=[{name: input, shape: [batch,1,28,28]}]'")
    if not model.outputs and not from_file:
        c.add("model.outputs", "list the model's outputs", [], "a list of {name}", fix="e.g. 'model.outputs=[{name: logits}]'")
    for dup in sorted({n for n in names if names.count(n) > 1}):
        c.add("model.inputs", "input names must be unique", dup, "each name once", fix=f"rename one '{dup}'")
    out_names = [o.name for o in model.outputs]
    for dup in sorted({n for n in out_names if out_names.count(n) > 1}):
        c.add("model.outputs", "output names must be unique", dup, "each name once", fix=f"rename one '{dup}'")
    used: set[str] = set()
    for i, spec in enumerate(model.inputs):
        base = f"model.inputs[{i}]"
        if spec.shape is None:
            if not from_file:
                c.add(f"{base}.shape", "missing required value", None, "a list of sizes and dim names", fix="e.g. shape: [batch, 3, 224, 224]")
            continue
        for axis, d in enumerate(spec.shape):
            d = _dim(d)
            if isinstance(d, int):
                if d < (0 if from_file else 1):  # an ONNX file's static 0 is an empty tensor, a real size
                    c.add(f"{base}.shape[{axis}]", "a fixed size must be positive", d, "1, 2, ... or a dim name",
                          fix="give a positive size, or a dim name declared under model.dims")
            elif d not in dims:
                c.add(f"{base}.shape[{axis}]", "unknown dim name", d, ", ".join(sorted(dims)) or "none declared",
                      fix=f"declare it under model.dims (command line: ++model.dims.{d}=[min,opt,max])")
            else:
                used.add(d)
        dtype = spec.dtype.value if spec.dtype is not None else "float32"
        if dtype in INT_DTYPES and dtype != "bool" and spec.range is None and input_values(spec) is None:
            c.add(f"{base}.range", f"integer input '{spec.name}' needs a value range", None, "[low, high)",
                  fix=f"e.g. model.inputs.{i}.range=[0,1000] (token ids below the vocabulary size)")
        if spec.range is not None:
            _check_value_range(c, f"{base}.range", list(spec.range), dims)
        if input_values(spec) is not None:
            _check_values(c, f"{base}.values", list(input_values(spec)), dtype)
        elif dtype == "string":
            c.add(f"{base}.values", f"string input '{spec.name}' needs the strings it takes", None,
                  "a list of strings", fix=f"e.g. 'model.inputs=[{{name: {spec.name}, dtype: string, shape: [batch, 1], "
                  "values: [paris, rome]}]' (the categories your pipeline was fitted on)")
    _check_profiles(c, model, dims, names)
    if not c.problems and dims:
        _check_memory(c, model, dims)
    return c.problems


def _check_memory(c: _Checker, model: Any, dims: Mapping[str, Any]) -> None:
    """The largest generated batch (every input at its dims' max) must fit in the machine's memory."""
    maxima = {name: r[2] for name, r in dim_rules.resolve(dims).items()}
    need = batch_bytes([(i.dtype.value if i.dtype is not None else "float32", [_dim(d) for d in i.shape])
                        for i in model.inputs if i.shape], maxima)
    budget = machine_bytes() * INPUT_SHARE
    if need > budget:
        dynamic = sorted({str(_dim(d)) for i in model.inputs if i.shape for d in i.shape if not isinstance(_dim(d), int)})
        c.add("model.dims", f"the largest generated input batch (every input at its dims' max) takes "
              f"{need / GIB:.1f} GiB, and this machine's {machine_bytes() / GIB:.0f} GiB allow "
              f"{budget / GIB:.1f} GiB for inputs", {d: list(dims[d]) if not isinstance(dims[d], str) else dims[d]
                                                     for d in dynamic if d in dims},
              f"max dims whose inputs fit in {budget / GIB:.1f} GiB",
              fix="lower the max of " + ", ".join(f"model.dims.{d}" for d in dynamic))


def _check_value_range(c: _Checker, path: str, r: list, dims: Mapping[str, Any]) -> None:
    """[low, high) of numbers, a bound possibly naming a declared dim ([0, batch] for an index input)."""
    named = [v for v in r if isinstance(v, str) and not _is_number(v)]
    for name in named:
        if name not in dims:
            c.add(path, f"the bound '{name}' names no dim of model.dims", r, ", ".join(sorted(dims)),
                  fix=f"declare it (model.dims.{name}=[min,opt,max]) or give a number")
    numbers = [float(v) for v in r if not (isinstance(v, str) and not _is_number(v))]
    if len(r) != 2 or (len(numbers) == 2 and not numbers[0] < numbers[1]):
        c.add(path, "needs [low, high) with low < high", r, "[low, high) numbers or dim names, low < high",
              fix=f"e.g. {path}=[0,1000]")


def input_values(spec: Any) -> Any:
    """An input's `values` (item access: on a DictConfig, `.values` is the mapping method)."""
    from omegaconf import OmegaConf

    return spec["values"] if OmegaConf.is_config(spec) else getattr(spec, "values", None)


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


DTYPE_LIMITS = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-2 ** 31, 2 ** 31 - 1),
                "int64": (-2 ** 63, 2 ** 63 - 1), "bool": (0, 1)}


def _check_values(c: _Checker, path: str, values: list, dtype: str) -> None:
    """An enum-like input's values: a non-empty list that the input's dtype can hold."""
    if not values:
        c.add(path, "needs at least one value", values, "a non-empty list", fix="list the values the input takes")
        return
    if dtype == "string":
        for v in values:
            if not isinstance(v, str):
                c.add(path, "values of a string input must be strings", v, "strings", fix="quote the value")
        return
    limits = DTYPE_LIMITS.get(dtype)
    for v in values:
        if not _is_number(v):
            c.add(path, "values must be numbers", v, "numbers", fix="list numbers only")
        elif limits and (float(v) != int(float(v)) or not limits[0] <= int(float(v)) <= limits[1]):
            c.add(path, f"{v} does not fit the input's {dtype}", v, f"integers in [{limits[0]}, {limits[1]}]",
                  fix="give values the dtype can hold, or change model.inputs.N.dtype")
        elif dtype == "float16" and abs(float(v)) > 65504:
            c.add(path, f"{v} does not fit float16", v, "|v| <= 65504", fix="use values within float16's range, or "
                  "dtype float32")


def _check_range(c: _Checker, path: str, r: Any) -> None:
    c.problems += range_problems(path, r, allow_zero=True)


def _check_profiles(c: _Checker, model: Any, dims: Mapping[str, Any], names: list[str]) -> None:
    by_name = {i.name: i for i in model.inputs}
    for p_index, profile in enumerate(_plain(model.profiles)):
        base = f"model.profiles[{p_index}]"
        if not isinstance(profile, Mapping):
            c.add(base, "a profile maps dim names to [min, opt, max] or input names to {min, opt, max}", profile,
                  "{dim: [min, opt, max]} or {input: {min, opt, max}}", fix="e.g. model.profiles=[{batch: [1,8,32]}]")
            continue
        for key, value in profile.items():
            path = f"{base}.{key}"
            if isinstance(value, Mapping):
                if key not in by_name:
                    c.add(path, "a profile for a missing input", key, ", ".join(names) or "no inputs",
                  fix="name one of the model's inputs")
                    continue
                _check_explicit(c, path, value, by_name[key].shape)
            elif key in dims:
                _check_range(c, path, value)
            else:
                c.add(path, "unknown dim name", key, ", ".join(sorted(dims)),
                      fix="name a dim of model.dims, or give an input's {min, opt, max} shapes")


def _check_explicit(c: _Checker, path: str, value: Mapping[str, Any], shape: Any) -> None:
    missing = [k for k in POSITIONS if k not in value]
    if missing:
        c.add(path, f"missing {', '.join(missing)}", sorted(missing), "{min, opt, max} shapes", fix="give min, opt and max shapes")
        return
    mn, op, mx = (list(value[k]) for k in POSITIONS)
    rank = len(shape) if shape is not None else len(mn)
    if not len(mn) == len(op) == len(mx) == rank:
        c.add(path, f"shapes need {rank} dims (batch first)", {"min": mn, "opt": op, "max": mx},
                  f"shapes of {rank} dims", fix=f"give min, opt and max with {rank} dims each")
    elif not all(1 <= a <= o <= z for a, o, z in zip(mn, op, mx)):
        c.add(path, "needs 1 <= min <= opt <= max in every dimension", {"min": mn, "opt": op, "max": mx},
                  "shapes with 1 <= min <= opt <= max per axis", fix="reorder or correct the shapes per axis")
    elif shape is not None and any(isinstance(_dim(d), int) and not a == o == z == _dim(d)
                                   for d, a, o, z in zip(shape, mn, op, mx)):
        c.add(path, f"a fixed dimension cannot vary; the input's shape is {list(shape)}", {"min": mn, "opt": op, "max": mx},
                  "the same size in min, opt and max on fixed axes", fix="make the fixed axes equal, or name the dim in "
                  "the input's shape")
