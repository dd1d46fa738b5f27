"""Latency's timing windows: a busy machine is timed again for the first figure only."""

from __future__ import annotations

import pytest

from compiler.verify import latency


class _Runner:
    def __init__(self):
        self.calls = 0

    def infer(self, feed, check_inputs=False):
        self.calls += 1


@pytest.fixture
def others_share(monkeypatch):
    """Each timing window reports the next of these shares of the CPU used by other processes."""
    shares: list[float] = []

    def timed_calls(runner, feed, iterations, max_seconds, min_iterations):
        for _ in range(iterations):
            runner.infer(feed)
        return [1.0] * iterations, shares.pop(0)

    monkeypatch.setattr(latency, "_timed_calls", timed_calls)
    monkeypatch.setattr(latency.time, "sleep", lambda seconds: None)
    return shares


def test_a_disturbed_window_is_timed_again_until_a_quiet_one(others_share):
    others_share += [0.5, 0.3, 0.01]
    figures = latency.measure(_Runner(), {1: {}}, 3, 0, latency.QuietWindows(5))
    assert (figures["b1"]["tries"], figures["b1"]["tries_allowed"], figures["b1"]["others_cpu_share"]) == (3, 5, 0.01)


def test_once_a_figure_found_no_quiet_window_the_later_figures_take_one_each(others_share):
    others_share += [0.5, 0.4, 0.6] + [0.01] + [0.2]
    quiet = latency.QuietWindows(3)
    figures = latency.measure(_Runner(), {1: {}, 32: {}}, 3, 0, quiet)
    assert [(f["tries"], f["tries_allowed"], f["others_cpu_share"]) for f in figures.values()] == [(3, 3, 0.4),
                                                                                                   (1, 1, 0.01)]
    assert quiet.busy and latency.measure(_Runner(), {1: {}}, 3, 0, quiet)["b1"]["tries"] == 1
    assert others_share == []


def test_compare_shares_one_budget_of_windows_across_its_rounds(others_share):
    others_share += [0.9, 0.9] + [0.9] * (2 * latency.ROUNDS - 1)
    v = type("V", (), {"iterations": 3, "warmup": 0, "max_seconds": 1.0, "warmup_seconds": 0.0, "quiet_tries": 2})
    runners = {name: _NullContext(_Runner()) for name in ("a", "b")}
    timed = latency.compare(runners, {"a": {1: {}}, "b": {1: {}}}, v)
    assert [timed[n]["b1"]["tries_allowed"] for n in ("a", "b")] == [1, 1] and others_share == []


class _NullContext:
    def __init__(self, runner):
        self.runner = runner

    def __enter__(self):
        return self.runner

    def __exit__(self, *exc):
        return False
