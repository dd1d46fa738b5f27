"""KV-cache decoders: which inputs carry the cache, and the prefill and decode steps that verify them.

Random feeds at a profile's shapes give a decoder a cache of noise. A decoder is used in two steps, so the ledger
runs both: a prefill (the past at its smallest, usually empty, and a prompt of new tokens), then one decode
step on the cache the reference produced in that prefill, so every artifact is judged on a real cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from compiler.heavy import np

if TYPE_CHECKING:
    from compiler.iospec import IOSpec

# (input prefix, output prefix): past_key_values.0.key -> present.0.key (transformers, optimum), past_0 -> present_0
CACHE_NAMES = (("past_key_values", "present"), ("past", "present"))
DEFAULT_PAST = [0, 16, 64]   # a foreign decoder's cache length: from empty (prefill) up
DEFAULT_NEW = [1, 1, 16]     # its new tokens: one (decode) up to a short prompt (prefill)


@dataclass(frozen=True)
class KVCache:
    pairs: tuple[tuple[str, str], ...]   # (past input, present output)
    past_dims: tuple[str, ...]           # the cache's length dims
    new_dims: tuple[str, ...]            # the new tokens' dims (input_ids' sequence)


def cache_pairs(inputs: Iterable[str], outputs: Iterable[str]) -> list[tuple[str, str]]:
    """(past input, present output) for every cache input whose present twin is an output."""
    outputs, pairs = set(outputs), []
    for name in inputs:
        for past, present in CACHE_NAMES:
            if name.startswith(past) and present + name[len(past):] in outputs:
                pairs.append((name, present + name[len(past):]))
                break
    return pairs


def kv_cache(io: IOSpec) -> KVCache | None:
    """The decoder's cache layout, read off the IO names; None when the model has no past/present pairs."""
    pairs = cache_pairs(io.input_names, io.output_names)
    if not pairs:
        return None
    skip = {io.batch_dim, *io.relations}
    cache_inputs = {p for p, _ in pairs}
    past = {d for t in io.inputs if t.name in cache_inputs for d in t.shape if isinstance(d, str)} - skip
    new = {d for t in io.inputs if t.name not in cache_inputs for d in t.shape if isinstance(d, str)} - skip - past
    return KVCache(tuple(pairs), tuple(sorted(past)), tuple(sorted(new)))


def step_sizes(io: IOSpec, cache: KVCache) -> tuple[dict[str, int], dict[str, int]]:
    """(prefill, decode) dim sizes: prefill from the past's min with as many new tokens as the decode step's past
    can hold; decode with the past the prefill left and the fewest new tokens (one, for a 1..N range)."""
    ranges = io.profiles[0]
    prefill = {d: ranges[d][0] for d in cache.past_dims}
    room = min((ranges[d][2] - ranges[d][0] for d in cache.past_dims), default=0)
    prompt = {d: max(ranges[d][0], min(ranges[d][2], room)) for d in cache.new_dims}
    prefill.update(prompt)
    length = max(prompt.values(), default=0)
    decode = {d: min(ranges[d][0] + length, ranges[d][2]) for d in cache.past_dims}
    decode.update({d: ranges[d][0] for d in cache.new_dims})
    return prefill, decode


def step_feeds(io: IOSpec, reference: Any, rng: "np.random.Generator") -> list[tuple[str, dict]]:
    """The prefill feed and the decode feed on the reference's own cache (a Polygraphy runner). Only the
    prefill when the reference cannot run it: the ledger then reports that feed as it reports any."""
    cache = kv_cache(io)
    if cache is None:
        return []
    prefill_sizes, decode_sizes = step_sizes(io, cache)
    prefill = io.random_feed(rng, io.shapes_at(prefill_sizes))
    feeds = [(f"prefill ({_sizes(prefill_sizes)})", prefill)]
    try:
        with reference:
            outputs = dict(reference.infer(prefill, check_inputs=False))
    except Exception:
        return feeds
    decode = io.random_feed(rng, io.shapes_at(decode_sizes))
    for past, present in cache.pairs:
        value = np.asarray(outputs[present])
        if value.shape != decode[past].shape:  # the cache is not what the declared dims say: leave the decode step
            return feeds
        decode[past] = value.astype(decode[past].dtype)
    feeds.append((f"decode on the prefill's cache ({_sizes(decode_sizes)})", decode))
    return feeds


def _sizes(sizes: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items())
