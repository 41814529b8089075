"""Where the built-in benchmark lives, installed or not.

The repository's ``cases/`` folder (config, prompts, published numbers) is
the package data ``benchmark.builtin`` (see ``[tool.setuptools.package-dir]``
in pyproject.toml), read through ``importlib.resources``: the same files in a
checkout, an editable install and a wheel. Recordings and frozen samples are
the user's, so they resolve against the project (pytest's rootdir or the
current folder), never against the package.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def builtin_path(*parts: str) -> Path:
    """A built-in file, e.g. ``builtin_path("bench.toml")``; package data is installed as plain files."""
    return Path(str(files("benchmark.builtin").joinpath(*parts)))
