"""Composing a recipe from the command line, and turning every way that can fail into Problems (exit 2).

Hydra stops at its first error and words it for Hydra's users ("Error merging override ...", "To append to
your config use +..."). Here a failed composition is composed again untyped, so that every schema problem is
listed at once; what remains (a deletion, an unknown recipe, an override Hydra cannot parse) is mapped from
Hydra's exception chain to one Problem with its key path, the bad value, what is allowed and a fix.
"""

from __future__ import annotations

import difflib
import re
import typing
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig

from compiler.errors import Problem
from compiler.lint import schema_problems
from compiler.resources import conf_dir

GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=with_dict_keys(overrides))


def with_dict_keys(overrides: list[str]) -> list[str]:
    """`model.dims.seq=[8,64,256]` as `++model.dims.seq=...`: keys of the schema's free-form mappings (model.dims,
    layer precisions, CUDA options) may be new, and Hydra's struct mode would refuse them without `++`."""
    return [f"++{o}" if _in_free_mapping(o) else o for o in overrides]


def _in_free_mapping(override: str) -> bool:
    if override.startswith(("+", "~")) or "=" not in override:
        return False
    from compiler.schema import RecipeConfig

    schema: Any = RecipeConfig
    parts = override.split("=", 1)[0].split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(schema) if is_dataclass(schema) else {}
        hint = _unoptional(hints.get(part))
        if hint is None:
            return False
        if typing.get_origin(hint) in (dict, typing.Dict):
            return i < len(parts) - 1   # a key inside it
        if not is_dataclass(hint):
            return False
        schema = hint
    return False


def _unoptional(hint: Any) -> Any:
    if typing.get_origin(hint) is typing.Union:
        return next((a for a in typing.get_args(hint) if a is not type(None)), None)
    return hint


def _forced(override: str) -> str:
    """`key=value` -> `++key=value`, so the untyped composition accepts keys the schema lacks."""
    if override.startswith(("+", "~")) or override.split("=", 1)[0] == "recipe":
        return override
    return f"++{override}"


def schema_problems_of(overrides: list[str]) -> list[Problem]:
    """Compose untyped and list every schema problem (unknown keys, types, enum values) at once."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from compiler import schema

    forced = [_forced(a) for a in overrides if not a.lstrip("+~").startswith("hydra")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            raw = hydra_compose("config", overrides=forced + [f"~{schema.SCHEMA_GROUP}"])
    except Exception:
        return []
    return schema_problems(OmegaConf.to_container(raw, resolve=False), schema.RecipeConfig)


def composition_problems(exc: BaseException, overrides: list[str],
                         more: Optional[Callable[[DictConfig], list[Problem]]] = None) -> list[Problem]:
    """Every problem behind a failed composition. With `more` (the recipe's cross-field checks), the command line
    is composed again without its bad overrides, so that a type or enum error hides no other problem."""
    found = schema_problems_of(overrides)
    if not found:
        return [_problem_of(exc, overrides)]
    bad = {p.path for p in found}
    kept = [o for o in overrides if not any(_key(o) == b or b.startswith(_key(o) + ".") for b in bad)]
    if more is None or len(kept) == len(overrides):
        return found
    try:
        rest = more(compose(kept))
    except Exception:  # what remains does not compose either: the schema problems stand alone
        return found
    return found + [p for p in rest if p.path not in bad]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _chain(exc: Optional[BaseException]) -> list[BaseException]:
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _problem_of(exc: BaseException, overrides: list[str]) -> Problem:
    chain = _chain(exc)
    names = {type(e).__name__ for e in chain}
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    key = next((str(e.full_key) for e in chain if getattr(e, "full_key", None)), None)
    if "OverrideParseException" in names or "LexerNoViableAltException" in names:
        bad = next((o for o in overrides if o in str(exc)), None) or _unparseable(overrides)
        allowed = "key=value in Hydra's override grammar; quote values with spaces or non-ASCII characters"
        if bad and not bad.isascii() and "=" in bad:  # Hydra's lexer takes non-ASCII only inside quotes
            key, value = bad.split("=", 1)
            return Problem("<command line>", "Hydra's override grammar takes non-ASCII characters only inside "
                           "quotes", bad, allowed, fix=f"quote the value: \"{key}='{value}'\" (the outer quotes are "
                           "for the shell)")
        return Problem("<command line>", f"Hydra cannot parse the override ({first})", bad, allowed,
                       fix="check its brackets and quotes (quote the whole override for the shell); a list element "
                           f"is addressed as key.0.field, not key[0].field; syntax: {GRAMMAR}")
    from compiler.recipe_source import YAML_ERROR

    if first.startswith(YAML_ERROR):
        return Problem("recipe", first, "the recipe file", "a YAML mapping", fix="correct the YAML at that line (a mapping's `{` and `}`, list dashes, "
                                            "indentation)")
    if "You must specify 'recipe'" in first:
        from compiler.recipe_source import available_recipes

        return Problem("recipe", "no recipe given", None, allowed=", ".join(available_recipes()),
                       fix="add recipe=NAME, e.g. recipe=cnn_torch (`python -m compiler --help` lists them)")
    base = re.match(r"In 'recipe/([^']+)': Could not (?:load|find) '(?:recipe/)?([^']+)'", first)
    if "MissingConfigException" in names and base:  # the recipe exists; a base in its `defaults` does not
        from compiler.recipe_source import available_recipes

        close = difflib.get_close_matches(base.group(2), available_recipes(), n=1)
        return Problem(f"recipe {base.group(1)}: defaults", f"names the base recipe '{base.group(2)}', which does "
                       "not exist", base.group(2), ", ".join(available_recipes()),
                       fix=(f"did you mean '{close[0]}'? " if close else "") + f"correct the `defaults:` list of "
                       f"{base.group(1)}.yaml")
    if "MissingConfigException" in names and "recipe" in first:
        from compiler.recipe_source import available_recipes

        asked = next((o.split("=", 1)[1] for o in overrides if o.startswith("recipe=")), "")
        close = difflib.get_close_matches(asked, available_recipes(), n=1)
        return Problem("recipe", "no such recipe", asked, ", ".join(available_recipes()),
                       fix=f"did you mean recipe={close[0]}?" if close else
                       "add your folder to COMPILER_RECIPE_PATH, or run `python -m compiler list`")
    text = " ".join(str(e) for e in chain)
    if "does not support deletion" in text and key:
        return Problem(key, "cannot be deleted: it is part of every recipe's schema", f"~{key}",
                       "setting the keys inside it", fix=f"remove `~{key}` from the command line; to change it, set the keys inside it")
    if "Could not delete" in text or ("delete" in first.lower() and "not exist" in text):
        target = key or first
        return Problem(str(target), "nothing to delete: no such key", f"~{target}", "~KEY of an existing key",
                       fix="check the key's spelling (`--cfg job` "
                                                                          "prints the composed recipe)")
    invalid = re.search(r"Invalid value '([^']*)', expected one of \[([^\]]*)\]", text)
    if invalid and key:
        allowed = [a.strip() for a in invalid.group(2).split(",")]
        close = difflib.get_close_matches(invalid.group(1), allowed, n=1)
        return Problem(key, "not an allowed value", invalid.group(1), ", ".join(allowed),
                       fix=f"did you mean '{close[0]}'?" if close else "use one of the allowed values")
    return Problem(key or "<command line>", first.replace("Error merging override ", "cannot apply "),
                   key or " ".join(overrides), "the keys and types of README.md, 'Options'", fix="check the override against README.md, 'Options' (`python -m compiler --help`)")


def _unparseable(overrides: list[str]) -> str:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except Exception:
            return override
    return " ".join(overrides)
