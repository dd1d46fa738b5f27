"""Serves flat recipe folders to Hydra as the config group `recipe`.

Hydra names a group after a folder under a search-path root; our recipes live in a flat
`recipes/` folder (and in the user's folders from COMPILER_RECIPE_PATH), so a ConfigSource
maps `recipe/NAME` to `<folder>/NAME.yaml`, and a SearchPathPlugin puts the user's folders
ahead of the built-in one, so that theirs win.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from compiler.resources import builtin_recipes_dir

GROUP = "recipe"
SCHEME = "compiler-recipes"
ENV_VAR = "COMPILER_RECIPE_PATH"


def user_recipe_dirs() -> list[Path]:
    return [Path(p).expanduser().resolve() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]


def recipe_dirs() -> list[Path]:
    """Every recipe folder, highest priority first."""
    return user_recipe_dirs() + [builtin_recipes_dir()]


def available_recipes() -> list[str]:
    return sorted({p.stem for d in recipe_dirs() if d.is_dir() for p in d.glob("*.yaml")})


YAML_ERROR = "YAML syntax error in recipe file"


def yaml_error(file: Path, exc: Exception) -> str:
    """One line: the file, the line and column, and what the YAML parser expected there."""
    mark = getattr(exc, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = " ".join(x for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x) or str(exc)
    return f"{YAML_ERROR} {file}:{where}: {what}"


class RecipeFolderSource(ConfigSource):
    """A folder of NAME.yaml files, seen by Hydra as `recipe/NAME`."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider=provider, path=path)
        self.folder = Path(path.split("://", 1)[-1])

    def _file(self, config_path: str) -> Optional[Path]:
        group, _, name = self._normalize_file_name(config_path).partition("/")
        return self.folder / name if group == GROUP and name and "/" not in name else None

    def available(self) -> bool:
        return self.folder.is_dir()

    def is_group(self, config_path: str) -> bool:
        return config_path in ("", GROUP) and self.available()

    def is_config(self, config_path: str) -> bool:
        file = self._file(config_path)
        return file is not None and file.is_file()

    def load_config(self, config_path: str) -> ConfigResult:
        file = self._file(config_path)
        if file is None or not file.is_file():
            raise ConfigLoadError(f"Recipe not found: {config_path} in {self.folder}")
        text = file.read_text(encoding="utf-8")
        try:
            config = OmegaConf.create(text) if text.strip() else OmegaConf.create({})
        except Exception as exc:  # YAML syntax: name the file and the line, not "<unicode string>"
            raise ConfigLoadError(yaml_error(file, exc)) from None
        return ConfigResult(config=config,
                            path=f"{SCHEME}://{self.folder}", provider=self.provider,
                            header=ConfigSource._get_header_dict(text[:512]))

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        if config_path == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        if config_path != GROUP or results_filter == ObjectType.GROUP:
            return []
        return sorted(p.stem for p in self.folder.glob("*.yaml"))


class RecipeSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for folder in reversed(user_recipe_dirs()):  # prepend: the first folder ends up first
            search_path.prepend(provider="compiler-user-recipes", path=f"{SCHEME}://{folder}")
        search_path.append(provider="compiler-recipes", path=f"{SCHEME}://{builtin_recipes_dir()}")


def register() -> None:
    Plugins.instance().register(RecipeSearchPath)
    Plugins.instance().register(RecipeFolderSource)
