"""For recipes that start from an ONNX file: read the IO spec from the file into the recipe.

Inputs, outputs, dtypes and dims come from the file. The recipe may add to them by name: a
value range or a shape for an input, tolerances for an output, ranges for dims. What the file
leaves open and the recipe does not give gets a default that is printed as a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from compiler.dims import dim_keys, is_expression, names_in, static_size
from compiler.errors import Problem
from compiler.heavy import onnx
from compiler.model import DType, InputSpec, OutputSpec
from compiler.onnx_files import escaping_locations, external_locations
from compiler.plan import custom_op_libraries
from compiler.recipe.edits import fill_io
from compiler.verify.kv_cache import DEFAULT_NEW, DEFAULT_PAST, cache_pairs

DEFAULT_BATCH = [1, 4, 8]        # a dynamic first dim the recipe gives no range for
DEFAULT_SPATIAL = [128, 128, 128]  # a dynamic height/width of an image input (rank 4, axes 2-3)
DEFAULT_OTHER = [16, 16, 16]     # any other dynamic dim: a sequence, a count
DEFAULT_INT_RANGE = [0, 2]       # an integer input whose valid values the graph does not show
DEFAULTS = {"batch": DEFAULT_BATCH, "spatial": DEFAULT_SPATIAL, "other": DEFAULT_OTHER}
# ops onnxruntime's CPU build runs from these domains without a custom-op library
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "ai.onnx.preview.training")


@dataclass(frozen=True)
class Opened:
    """What reading an ONNX file's IO gave a default rather than a value from the file or the recipe: the dims
    (name -> batch, spatial or other) and the integer inputs whose values the graph does not show. The memory fit
    and the input-domain probe may change only these. `notes` say what was read and defaulted."""

    dims: Mapping[str, str] = field(default_factory=dict)
    ints: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def resolve_onnx_io(cfg: DictConfig) -> tuple[list[Problem], Opened]:
    """Fill model.inputs/outputs/dims from model.path (recipe.edits.fill_io); return (problems, what was opened)."""
    if OmegaConf.is_missing(cfg.model, "path") or not cfg.model.path:
        return [Problem("model.path", "missing required value", None, "the path of an .onnx file", fix="model.path=/abs/path/model.onnx")], Opened()
    path = Path(cfg.model.path).expanduser()
    if not path.is_file():
        return [Problem("model.path", "file not found", str(path), "an existing .onnx file", fix="give an existing .onnx file")], Opened()

    fix = "re-export the model, or check it with `polygraphy inspect model`"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others
        return [Problem("model.path", f"not a readable ONNX model ({type(exc).__name__})", str(path),
                        "an ONNX ModelProto file", fix=fix)], Opened()
    if not model.graph.output or not model.opset_import:  # an empty file parses as an empty ModelProto
        what = "an empty file" if path.stat().st_size == 0 else "no graph outputs or opset (not an ONNX model)"
        return [Problem("model.path", f"not a loadable ONNX model: {what}", str(path), "an ONNX ModelProto file",
                        fix=fix)], Opened()
    problems = _external_data_problems(path, model) + _domain_problems(model, cfg)
    if problems:
        return problems, Opened()
    return _fill(cfg, model)


def _external_data_problems(path: Path, model: Any) -> list[Problem]:
    bad = escaping_locations(path, external_locations(model))
    return [Problem("model.path", "external data must be a file inside the model's folder", loc,
                    "a relative location inside the model's folder",
                    fix=f"move the weights file next to {path.name} and name it relatively") for loc in bad]


def _domain_problems(model: Any, cfg: DictConfig) -> list[Problem]:
    local = {f.domain for f in model.functions}
    custom = sorted({(n.op_type, n.domain) for n in model.graph.node if n.domain not in KNOWN_DOMAINS + tuple(local)})

    if not custom or custom_op_libraries(cfg):
        return []
    ops = ", ".join(f"{op} (domain {domain})" for op, domain in custom)
    return [Problem("model.path", f"custom ops that onnxruntime does not know: {ops}", str(cfg.model.path),
                    "ops of onnxruntime's domains, or custom ops with their library",
                    fix="give their onnxruntime custom-op library (engine.onnxruntime.custom_op_libraries=[/abs/lib.so]) "
                        "and, for TensorRT, their plugin library (engine.tensorrt.plugins=[/abs/plugin.so])")]


def _fill(cfg: DictConfig, model: Any) -> tuple[list[Problem], Opened]:
    given_in = {i.name: i for i in cfg.model.inputs}
    given_out = {o.name: o for o in cfg.model.outputs}
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers or i.name in given_in]
    problems, notes = [], []
    for name in given_in:
        if name not in {i.name for i in model.graph.input}:
            problems.append(Problem("model.inputs", "no such input in the file", name,
                                    ", ".join(i.name for i in graph_inputs) or "none",
                                    fix="name the file's inputs as `polygraphy inspect model` lists them"))
    file_outputs = [o.name for o in model.graph.output]
    for name in given_out:
        if name not in file_outputs:
            problems.append(Problem("model.outputs", "no such output in the file", name, ", ".join(file_outputs),
                                    fix="name one of the file's outputs, or remove model.outputs"))
    # a dim set to null (the onnx_file recipe's `batch`) is left to the file and its default
    dims = {name: r for name, r in OmegaConf.to_container(cfg.model.dims, resolve=True).items() if r is not None}
    defaulted: dict[str, str] = {}  # dim -> the note saying which default it got
    kinds: dict[str, str] = {}      # dim -> which default (batch, spatial, other)
    open_ints: list[str] = []
    inputs = []
    keys = dim_keys(graph_inputs)
    gather_limits = _gather_limits(model, keys)
    for value in graph_inputs:
        tensor = value.type.tensor_type
        given = given_in.get(value.name)
        dtype = _dtype_name(tensor.elem_type)
        if dtype is None:
            problems.append(Problem("model.path", f"input '{value.name}' has a dtype verification cannot feed",
                                    onnx.TensorProto.DataType.Name(tensor.elem_type),
                                    "float32, float16, bfloat16, int64, int32, int8, uint8, bool",
                                    fix="re-export the model with inputs of an allowed dtype"))
            continue
        if given is not None and given.shape is not None:
            shape = list(given.shape)
        elif not tensor.HasField("shape"):
            problems.append(Problem("model.inputs", f"input '{value.name}' has no shape in the file", value.name,
                                    "an input whose shape the recipe or the file gives",
                                    fix=f"give it, with its real sizes: 'model.inputs=[{{name: {value.name}, shape: [batch,3,224,224]}}]'"))
            continue
        else:
            shape = []
            for axis, d in enumerate(tensor.shape.dim):
                if static_size(d) is not None:
                    shape.append(static_size(d))
                    continue
                name = keys[(value.name, axis)]
                shape.append(name)
                if name not in dims and d.dim_param in dims:  # a recipe file may use the model file's own name
                    dims[name] = dims.pop(d.dim_param)
                if name not in dims:
                    kinds[name] = _default_kind(axis, len(tensor.shape.dim))
                    dims[name] = list(DEFAULTS[kinds[name]])
                    called = f"'{name}'" if d.dim_param in ("", name) else f"'{d.dim_param}', called '{name}' here"
                    defaulted[name] = f"input '{value.name}' dim {axis} ({called}) has no range: using {{}}; " \
                                      f"set ++model.dims.{name}=[min,opt,max] to choose"
        entry: dict[str, Any] = {"name": value.name, "shape": shape, "dtype": dtype, "range": None}
        if given is not None and given["values"] is not None:
            entry["values"] = list(given["values"])
        elif dtype == "string":  # the categories the graph itself names (OneHotEncoder, LabelEncoder, ...)
            categories = string_categories(model, value.name)
            if categories:
                entry["values"] = categories
                notes.append(f"string input '{value.name}' takes the {len(categories)} categories its graph names "
                             f"({', '.join(categories[:5])}{', ...' if len(categories) > 5 else ''}); set "
                             f"'model.inputs=[{{name: {value.name}, values: [a, b]}}]' to choose")
        if given is not None and given.range is not None:
            entry["range"] = list(given.range)
        elif dtype in ("int64", "int32", "int8", "uint8"):
            limit = gather_limits.get(value.name)
            entry["range"] = [0, limit] if limit else list(DEFAULT_INT_RANGE)
            if isinstance(limit, str):
                notes.append(f"input '{value.name}' indexes dim '{limit}' of another input: its values are taken "
                             f"in [0, {limit}); set 'model.inputs=[{{name: {value.name}, range: [0,N]}}]' to choose")
            if not limit:
                open_ints.append(value.name)
                notes.append(f"input '{value.name}' ({dtype}) has no value range: using {DEFAULT_INT_RANGE}; set "
                             f"'model.inputs=[{{name: {value.name}, range: [0,1000]}}]' (its real [low,high)) to choose")
        inputs.append(entry)
    if problems:
        return problems, Opened()
    derived = _decoder_dims(inputs, file_outputs, dims, set(defaulted))
    derived.update(_state_batches(inputs, dims, defaulted, kinds))
    notes += [note.format(dims[name]) for name, note in defaulted.items() if name not in derived]
    notes += derived.values()
    notes += _unused_dims(inputs, dims, set(defaulted))
    for value in model.graph.output:
        kind = value.type.WhichOneof("value")
        if kind is not None and kind != "tensor_type":
            notes.append(f"output '{value.name}' is a {kind.removesuffix('_type')}, not a "
                         "tensor: the engine keeps it, the ledger does not compare it")

    fill_io(cfg, [InputSpec(e["name"], e["shape"], DType(e["dtype"]), e["range"], e.get("values")) for e in inputs],
            [OutputSpec(n, given_out[n].atol, given_out[n].rtol, given_out[n].rel_l2, given_out[n].cosine,
                        given_out[n].argmax) if n in given_out else OutputSpec(n) for n in file_outputs], dims)
    return [], Opened({name: kinds[name] for name in defaulted if name not in derived}, tuple(open_ints), tuple(notes))


def _unused_dims(inputs: list[dict], dims: dict, defaulted: set[str]) -> list[str]:
    """A note per recipe dim that no input of the file names and no expression or range reads, yet is spelled
    like one that is: a typo, which would otherwise leave the dim meant at its default without a word. (A dim
    merely unused, like the recipe's `batch` on a file of fixed shapes, says nothing.)"""
    import difflib


    read = {d for e in inputs for d in e["shape"] if isinstance(d, str)}
    read |= {b for e in inputs for b in (e["range"] or []) if isinstance(b, str)}
    read |= {n for v in dims.values() if is_expression(v) for n in names_in(v)}
    notes = []
    for name in dims:
        close = difflib.get_close_matches(name, sorted(read), n=1, cutoff=0.6)
        if name not in read and name not in defaulted and close:
            notes.append(f"model.dims.{name} is named by no input of the file, so it has no effect; did you mean "
                         f"'{close[0]}'? (++model.dims.{close[0]}={_plain_list(dims[name])})")
    return notes


def _plain_list(value: Any) -> str:
    return "[" + ",".join(str(v) for v in value) + "]" if isinstance(value, list) else f"'{value}'"


def _decoder_dims(inputs: list[dict], outputs: list[str], dims: dict, defaulted: set[str]) -> dict[str, str]:
    """A KV-cache decoder's dims where the file leaves them open (verify/kv_cache.py): the cache's length from
    empty up, one to a few new tokens, and a mask over both, `total = past + new`. Returns {dim: note}."""
    cache = {past for past, _ in cache_pairs([e["name"] for e in inputs], outputs)}
    if not cache:
        return {}
    batch = {e["shape"][0] for e in inputs if e["shape"] and isinstance(e["shape"][0], str)}

    def named(entry: dict) -> list[str]:
        return [d for d in entry["shape"][1:] if isinstance(d, str) and d not in batch]

    others = [e for e in inputs if e["name"] not in cache]
    past = {d for e in inputs if e["name"] in cache for d in named(e)}
    tokens = next((e for e in others if "input_ids" in e["name"]), None) or \
        next((e for e in others if e["dtype"].startswith("int") and named(e)), None)
    new = set(named(tokens)) - past if tokens else set()
    notes = {}
    for names, default, what in ((past, DEFAULT_PAST, "the KV cache's length, from empty"),
                                 (new, DEFAULT_NEW, "new tokens per step")):
        for d in sorted(names & defaulted):
            dims[d] = list(default)
            notes[d] = f"dim '{d}' ({what}) has no range: using {default}; set ++model.dims.{d}=[min,opt,max] to choose"
    if len(past) == 1 and len(new) == 1:
        relation = f"{next(iter(past))} + {next(iter(new))}"
        for d in sorted({d for e in others for d in named(e)} - past - new - batch):
            if d in defaulted:
                dims[d] = relation
                notes[d] = f"dim '{d}' (past and new tokens, as a decoder's attention mask covers) is taken as " \
                           f"{relation}; set ++model.dims.{d}=[min,opt,max] (or another relation) to choose"
    return notes


def _state_batches(inputs: list[dict], dims: dict, defaulted: dict[str, str], kinds: dict[str, str]) -> dict[str, str]:
    """A recurrent state's unnamed batch: an input with a fixed first dim and an unnamed dynamic second one
    (an LSTM/GRU state, [layers, batch, hidden]) beside inputs that share one batch dim takes that dim, not a
    size of its own that could never match the others' batch. Returns {dim: note}; edits shapes in place."""
    batches = {e["shape"][0] for e in inputs if e["shape"] and isinstance(e["shape"][0], str)}
    if len(batches) != 1:
        return {}
    batch, notes = batches.pop(), {}
    for entry in inputs:
        shape = entry["shape"]
        unnamed = f"{entry['name']}_dim1"
        if len(shape) >= 2 and isinstance(shape[0], int) and shape[1] == unnamed and unnamed in defaulted:
            shape[1] = batch
            dims.pop(unnamed, None)
            kinds.pop(unnamed, None)
            notes[unnamed] = f"input '{entry['name']}' dim 1 (unnamed, after a fixed dim: a recurrent state's " \
                             f"[layers, batch, ...]) is taken as the batch '{batch}'; give the input's shape " \
                             f"('model.inputs=[{{name: {entry['name']}, shape: [...]}}]') to choose"
    return notes


def _default_kind(axis: int, rank: int) -> str:
    if axis == 0:
        return "batch"
    if rank == 4 and axis >= 2:
        return "spatial"
    return "other"


# ai.onnx.ml nodes that name the strings they take
STRING_CATEGORIES = {"OneHotEncoder": "cats_strings", "LabelEncoder": "keys_strings", "CategoryMapper": "cats_strings",
                     "DictVectorizer": "string_vocabulary"}


def string_categories(model: Any, name: str) -> list[str]:
    """The strings a string input takes, as the graph's encoders name them: the nodes that read it, directly or
    through shape-only ops (Identity, Reshape, Squeeze, Unsqueeze, Flatten, Concat of strings)."""
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    found, frontier, seen = [], [name], set()
    while frontier:
        tensor = frontier.pop()
        for node in readers.get(tensor, []):
            if id(node) in seen:
                continue
            seen.add(id(node))
            attr = STRING_CATEGORIES.get(node.op_type)
            if attr:
                values = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == attr), [])
                found += [v.decode() if isinstance(v, bytes) else str(v) for v in values]
            elif node.op_type in ("Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Concat"):
                frontier += list(node.output)
    return list(dict.fromkeys(found))


def _dtype_name(elem_type: int) -> str | None:
    names = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
             onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32",
             onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.BOOL: "bool",
             onnx.TensorProto.STRING: "string"}
    return names.get(elem_type)


# ops that carry a value through unchanged in what matters here (its values, up to shape and dtype): an input is
# traced through them to the op that reads it (index bounds here, compared constants in input_domain.py)
PASS_THROUGH = frozenset({"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity"})


def _gather_limits(model: Any, keys: dict[tuple[str, int], str]) -> dict[str, int | str]:
    """Integer inputs used as indices, with the bound their values must stay below: the rows of a weight table
    (an embedding), or the size of another input's dim (RoiAlign's batch_indices below its images' batch, a
    Gather into another input): a number, or the name of that dim."""
    tables = {i.name: list(i.dims) for i in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in tables}
    copies: dict[str, str] = {}  # tensor -> the graph input it is a reshaped/cast copy of
    limits: dict[str, int | str] = {}

    def source(name: str) -> str | None:
        return name if name in inputs else copies.get(name)

    def input_dim(name: str, axis: int) -> int | str | None:
        dims = inputs[name].type.tensor_type.shape.dim
        if not -len(dims) <= axis < len(dims):
            return None
        d = dims[axis]
        size = static_size(d)
        return size if size is not None else keys.get((name, axis % len(dims)))

    for node in model.graph.node:  # graph order: producers come first
        if node.op_type in PASS_THROUGH and node.input and source(node.input[0]):
            copies[node.output[0]] = source(node.input[0])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if node.op_type in ("Gather", "GatherElements") and len(node.input) == 2 and source(node.input[1]):
            index, table = source(node.input[1]), node.input[0]
            if table in tables:
                rows = int(tables[table][axis])
                limits[index] = min(int(limits.get(index, rows)), rows)
            elif source(table):
                bound = input_dim(source(table), axis)
                if bound is not None:
                    limits.setdefault(index, bound)
        if node.op_type == "RoiAlign" and len(node.input) == 3 and source(node.input[2]) and source(node.input[0]):
            bound = input_dim(source(node.input[0]), 0)
            if bound is not None:
                limits.setdefault(source(node.input[2]), bound)
    return limits
