"""Every pass argument is declared with its kind and range; lint refuses a value outside it, with the key path."""

from __future__ import annotations

import pytest

from compiler.passes import REGISTRY, parse_pass_list

CASES = [(name, arg, declared) for name, info in REGISTRY.items() for arg, declared in info.args.items()]


@pytest.mark.parametrize("name, arg, declared", CASES, ids=[f"{n}.{a}" for n, a, _ in CASES])
def test_every_argument_refuses_a_value_outside_its_range(name, arg, declared):
    required = {a: (d.default if d.default is not None else _good(d)) for a, d in REGISTRY[name].args.items()}
    calls, problems = parse_pass_list([{name: {**required, arg: declared.bad_example()}}])
    assert not calls
    assert [p.path for p in problems] == [f"surgery.passes[0].{name}.{arg}"]
    assert problems[0].allowed == declared.allowed() and problems[0].fix


@pytest.mark.parametrize("name", [n for n, info in REGISTRY.items() if info.args])
def test_defaults_and_good_values_pass(name):
    good = {a: (d.default if d.default is not None else _good(d)) for a, d in REGISTRY[name].args.items()}
    calls, problems = parse_pass_list([{name: good}])
    assert not problems and calls[0].args == good


def _good(declared):
    return {"int": declared.minimum or 1, "str": "x", "names": ["a"], "renames": {"a": "b"}, "mapping": {},
            "bool": True}[declared.kind]


def test_the_ranges_are_the_ones_users_hit():
    _, problems = parse_pass_list([{"set_batch": {"size": -3}}, {"set_batch": {"size": 0}},
                                   {"convert_opset": {"version": 3}}, {"set_batch": {"size": "dynamic"}},
                                   {"set_batch": {"size": 4}}])
    assert [(p.path, p.value) for p in problems] == [("surgery.passes[0].set_batch.size", -3),
                                                     ("surgery.passes[1].set_batch.size", 0),
                                                     ("surgery.passes[2].convert_opset.version", 3)]


def test_list_shows_each_arguments_range():
    from compiler.discovery import list_text

    text = list_text()
    assert "size: an integer >= 1 or 'dynamic'; default 'dynamic'" in text
    assert "version: an integer in 7..23; default 17" in text
