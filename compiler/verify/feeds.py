"""The inputs every check feeds a model: random valid inputs at the min, opt and max shapes of each profile, then one
feed per value of each input that chooses between branches; and the recipe's labelled test samples (`samples`).
Verification and the input domain probe (compiler/input_domain.py) feed the same generated ones, so a domain the
probe accepts is the one verified."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from compiler.heavy import np

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from compiler.iospec import IOSpec

MAX_CHOICE_FEEDS = 8


def generated_feeds(io: IOSpec, rng: Any, profiles: Sequence[int] | None = None) -> list[tuple[str, dict]]:
    """(label, feed) at every profile's distinct min/opt/max shapes, then the branch feeds."""
    feeds = [(label, io.random_feed(rng, shapes)) for label, shapes in io.check_shapes(profiles)]
    return feeds + branch_feeds(io, rng)


def branch_feeds(io: IOSpec, rng: Any) -> list[tuple[str, dict]]:
    """Inputs that choose between branches take each of their values once, at the opt shapes: a bool input (an
    If's condition, a flag) False and True, an enum-like input each of its `values`. Random feeds alone may
    never take one side of an If."""
    feeds = []
    for t in io.inputs:
        choices = [False, True] if t.dtype == "bool" else list(t.values or [])[:MAX_CHOICE_FEEDS]
        if len(choices) < 2:  # one value: every feed takes it already
            continue
        for value in choices:
            feed = io.random_feed(rng, io.shapes(0, "opt"))
            feed[t.name] = np.full(feed[t.name].shape, value, dtype=feed[t.name].dtype)
            feeds.append((f"opt, {t.name}={value}", feed))
    return feeds


def samples(cfg: DictConfig, io: IOSpec) -> tuple[Any, Any]:
    """(labelled test inputs in the engine's layout, their labels), or (None, None) without data."""
    if cfg.data.source.value == "none":
        return None, None
    from compiler.data.sources import load_dataset

    data = load_dataset(cfg.data, io, cfg.seed)
    x, y = io.to_engine(data.x_test), data.y_test
    fixed, count = io.fixed_batch, len(next(iter(x.values())))
    if fixed and count % fixed:  # a fixed-batch model takes whole batches only
        keep = count - count % fixed
        x, y = {k: v[:keep] for k, v in x.items()}, (None if y is None else y[:keep])
    return x, y
