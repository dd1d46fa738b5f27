"""Packages are found, not listed: every `compiler.*` package with an __init__.py ships. conf/ and recipes/ live at
the top of the repo and ship inside the package as compiler._conf and compiler._recipes (pyproject.toml maps them)."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["compiler", "compiler.*"]) + ["compiler._conf", "compiler._recipes"])
