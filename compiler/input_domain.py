"""Probe an ONNX file's input domain before anything is built: feed the original file, in onnxruntime, the
very inputs verification will generate (verify/feeds.py) and, where it refuses them, try documented
alternatives for what got a default (onnx_io.Opened), never for what the file or the recipe gave.

The alternatives, in order, each alone first and then each beside the first:
  1. integer inputs whose values the graph does not show: the integer constants the graph compares them with
     (an `Equal(sr, 16000)`, in any branch), as `values`; then 0 alone (an index into something small);
  2. sequences and counts (dims that are neither a batch nor an image's height/width): longer, 32 up to 4096
     (a reflect padding, an STFT window or a convolution stack needs more than the default 16);
  3. an image's height and width: 224, then other multiples of 32 up to 640, then 32 and 64 (a fixed position
     embedding, a stride-32 backbone);
  4. the batch: 1 only (a graph that reshapes to a fixed batch).
What was tried and what onnxruntime said is kept for the report. When nothing runs, the recipe is at fault:
exit 2, naming the input, onnxruntime's words and the keys that declare the domain. The verdict of a probe
that had to search is cached by the file's content and its IO spec.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from compiler.cache import cache_root, sha256_artifact
from compiler.errors import Problem
from compiler.heavy import np, onnx
from compiler.iospec import IOSpec
from compiler.onnx_io import PASS_THROUGH, Opened
from compiler.plan import custom_op_libraries
from compiler.recipe.edits import Change, with_change
from compiler.recipe.resolved import Resolved, freeze
from compiler.verify.feeds import generated_feeds

SEQUENCE_SIZES = (32, 64, 128, 256, 512, 1024, 4096)
SPATIAL_SIZES = (224, 256, 320, 384, 448, 512, 640, 32, 64)
MAX_TRIES = 24
BUDGET_SECONDS = 120.0
_COMPARISONS = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"}
PROBE_VERSION = 1


@dataclass
class Probe:
    """What the probe did: notes for the report, a problem when no domain ran, and the recipe the run takes (the
    one probed, or a copy resolved with the alternative that ran: only what onnx_io.Opened lists changes)."""

    resolved: Resolved
    notes: list[str] = field(default_factory=list)
    problem: Problem | None = None


def probe(resolved: Resolved, opened: Opened) -> Probe:
    """Check the resolved recipe's generated inputs against the file; where it refuses them, find an alternative."""
    cfg = resolved.cfg
    cached = _cache_path(cfg)
    if cached is not None and cached.is_file():
        first, tried, found = json.loads(cached.read_text())
    else:
        first, tried, found = _search(resolved, opened)
        if cached is not None:
            _store(cached, [first, tried, found])
    if first is None:
        return Probe(resolved)
    # with an alternative that runs, a different recipe from here on: its own IOSpec and plan
    taken = freeze(with_change(cfg, found[1]), resolved.domain) if found else resolved
    return _verdict(taken, first, tried, found)


def _search(resolved: Resolved, opened: Opened) -> tuple[Any, list[str], Any]:
    """(the first refusal or None, what was tried, (label, change) that ran or None)."""
    cfg = resolved.cfg
    session = _session(cfg)
    if session is None:  # onnxruntime cannot load the file: import says why, in its own words
        return None, [], None
    first = _refusal(session, resolved.io, cfg.seed)
    if first is None:
        return None, [], None
    started, tried = time.perf_counter(), []
    for label, change in _alternatives(cfg, opened):
        if len(tried) >= MAX_TRIES or time.perf_counter() - started > BUDGET_SECONDS:
            break
        # each alternative is a candidate recipe of its own; the run takes the one that runs (probe)
        refusal = _refusal(session, IOSpec.from_cfg(with_change(cfg, change)), cfg.seed)
        tried.append(f"{label}: {'runs' if refusal is None else 'refused'}")
        if refusal is None:
            return first, tried, (label, change)
    return first, tried, None


def _verdict(resolved: Resolved, first: Any, tried: list[str], found: Any) -> Probe:
    cfg = resolved.cfg
    where, words = first
    said = f"onnxruntime refused the generated inputs at '{where}': {words}"
    if found:
        keys = " ".join(_override(k, v) for k, v in _flat(found[1]))
        return Probe(resolved, [f"{said}; tried {', '.join(tried)}; using {found[0]} (to choose yourself: {keys})"])
    names = [t.name for t in cfg.model.inputs if re.search(rf"\b{re.escape(t.name)}\b", words)] or \
        [t.name for t in cfg.model.inputs][:1]
    tried_text = f"; also tried: {', '.join(tried)}" if tried else "; nothing the recipe left open to try"
    spec = next((t for t in cfg.model.inputs if names and t.name == names[0]), None)
    own = [d for d in (spec.shape if spec is not None else []) if isinstance(d, str)]
    sizes = " ".join(f"++model.dims.{d}=[min,opt,max]" for d in own) or "++model.dims.NAME=[min,opt,max]"
    return Probe(resolved, [said + tried_text], Problem(
        f"model.inputs[{names[0]}]" if names else "model.dims", said + tried_text, names or sizes,
        "inputs the model runs on: declared dims, ranges or values, or real data",
        fix=f"declare the domain: the sizes of its dims ({sizes}; a relation: ++model.dims.total='past + seq'), "
            "integer values ('model.inputs=[{name: X, range: [0,N]}]', a bound naming a dim, or values: [A,B]), "
            "or real inputs (data.source=npz data.path=...)"))


def _flat(change: Change) -> Iterator[tuple[str, Any]]:
    for name, value in change.get("dims", {}).items():
        yield f"++model.dims.{name}", value
    for name, value in change.get("values", {}).items():
        yield f"model.inputs[{name}].values", value


def _override(key: str, value: Any) -> str:
    if key.startswith("model.inputs["):
        name = key[len("model.inputs["):key.index("]")]
        return f"'model.inputs=[{{name: {name}, values: {json.dumps(value)}}}]'"
    return f"{key}={json.dumps(value).replace(' ', '')}"


# --- alternatives ---------------------------------------------------------------------------------------

def _alternatives(cfg: DictConfig, opened: Opened) -> Iterator[tuple[str, Change]]:
    """(what it is, the change) in the documented order: each alone, then each beside the file's constants."""
    kinds = dict(opened.dims)
    values = _compared_constants(cfg, list(opened.ints))
    constants = [("the file's constants as values", {"values": values})] if values else []
    alone = list(_dim_alternatives(kinds))
    yield from constants
    if opened.ints:
        yield f"{'/'.join(opened.ints)} = 0", {"values": {name: [0] for name in opened.ints}}
        # all ones: what an integer input read as a shape takes at any input size (Expand's and Tile's identity)
        yield f"{'/'.join(opened.ints)} = 1", {"values": {name: [1] for name in opened.ints}}
    yield from alone
    for label, change in alone if constants else ():
        yield f"{label} and {constants[0][0]}", {**change, **constants[0][1]}


def _dim_alternatives(kinds: dict[str, str]) -> Iterator[tuple[str, Change]]:
    sequences = [d for d, k in kinds.items() if k == "other"]
    spatial = [d for d, k in kinds.items() if k == "spatial"]
    batch = [d for d, k in kinds.items() if k == "batch"]
    for size in SEQUENCE_SIZES if sequences else ():
        yield f"{'/'.join(sequences)} = {size}", {"dims": {d: [size] * 3 for d in sequences}}
    for size in SPATIAL_SIZES if spatial else ():
        yield f"{'/'.join(spatial)} = {size}", {"dims": {d: [size] * 3 for d in spatial}}
    if batch:
        yield f"{'/'.join(batch)} = 1", {"dims": {d: [1, 1, 1] for d in batch}}


def _compared_constants(cfg: DictConfig, ints: list[str]) -> dict[str, list[int]]:
    """For each open integer input, the integer scalars the graph compares it with, anywhere (If branches too)."""
    if not ints:
        return {}
    from onnx import numpy_helper

    model = onnx.load(str(Path(cfg.model.path).expanduser()), load_external_data=False)
    constants: dict[str, int] = {}
    found: dict[str, set[int]] = {name: set() for name in ints}
    copies = {name: name for name in ints}  # tensor -> the open input it is a cast/reshaped copy of (outer scopes too)
    for graph in _graphs(model.graph):  # an outer graph before the branches that read its values
        for tensor in graph.initializer:
            _scalar(constants, tensor.name, tensor, numpy_helper)
        for node in graph.node:
            if node.op_type == "Constant":
                for attribute in node.attribute:
                    if attribute.name == "value":
                        _scalar(constants, node.output[0], attribute.t, numpy_helper)
            if node.op_type in PASS_THROUGH and node.input and node.input[0] in copies:
                copies[node.output[0]] = copies[node.input[0]]
            if node.op_type in _COMPARISONS and len(node.input) == 2:
                for mine, other in (node.input, reversed(node.input)):
                    if mine in copies and other in constants:
                        found[copies[mine]].add(constants[other])
    return {name: sorted(v) for name, v in found.items() if v}


def _scalar(constants: dict[str, int], name: str, tensor: Any, numpy_helper: Any) -> None:
    if tensor.data_location == 1 or int(np.prod(tensor.dims or [1])) != 1:
        return
    value = numpy_helper.to_array(tensor).reshape(())
    if np.issubdtype(value.dtype, np.integer) or (np.issubdtype(value.dtype, np.floating) and np.isfinite(value)
                                                  and float(value) == int(value)):
        constants[name] = int(value)


def _graphs(graph: Any) -> Iterator[Any]:
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.g.node or attribute.g.name:
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


# --- running ----------------------------------------------------------------------------------------------

def _session(cfg: DictConfig) -> Any:
    import onnxruntime as ort

    from compiler.backends.onnxruntime import without_prepacking

    options = without_prepacking()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # a refusal is expected here: no error lines on the console

    try:
        for library in custom_op_libraries(cfg):
            options.register_custom_ops_library(str(Path(library).expanduser()))
        return ort.InferenceSession(str(Path(cfg.model.path).expanduser()), options,
                                    providers=["CPUExecutionProvider"])
    except Exception:
        return None


def _refusal(session: Any, io: IOSpec, seed: int) -> tuple[str, str] | None:
    """(feed label, onnxruntime's words) for the first generated feed the file refuses; None when all run."""

    if any(t.dtype == "bfloat16" for t in io.inputs):
        return None  # numpy has no bfloat16 to feed: verification's own runners convert
    try:
        feeds = generated_feeds(io, np.random.default_rng(seed))
    except ValueError:  # a bound naming a dim no shape uses: lint's to say, not onnxruntime's refusal
        return None
    import onnxruntime as ort

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4
    for label, feed in feeds:
        try:
            session.run(None, feed, quiet)
        except Exception as exc:
            return label, words(exc)
    return None


def words(exc: Exception) -> str:
    """onnxruntime's refusal in one short line: the innermost node and its message, without source paths."""
    text = " ".join(str(exc).split())
    nodes = re.findall(r"running (\S+) node\. Name:'([^']*)'", text)
    message = text.rsplit("Status Message: ", 1)[-1] if "Status Message: " in text else text
    message = re.sub(r"^/\S+:\d+ [^(]*\([^)]*\)\s*", "", message)
    where = f"{nodes[-1][0]} node{' ' + repr(nodes[-1][1]) if nodes[-1][1] else ''}: " if nodes else ""
    return (where + message)[:240]


# --- cache --------------------------------------------------------------------------------------------------

def _cache_path(cfg: DictConfig) -> Path | None:
    """Where a probe's verdict on this file and IO spec lives; None with the cache off."""
    if not cfg.cache.enabled:
        return None
    import hashlib

    import onnxruntime as ort


    spec = OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)
    spec.pop("path", None)
    key = json.dumps({"file": sha256_artifact(Path(cfg.model.path).expanduser()), "model": spec, "seed": cfg.seed,
                      "onnxruntime": ort.__version__, "probe": PROBE_VERSION}, sort_keys=True, default=str)
    return cache_root(cfg.cache) / ".domain" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def _store(path: Path, record: list) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
