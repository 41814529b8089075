"""Repository wiring. The astrobench plugin itself is registered through the
``pytest11`` entry point (see pyproject.toml), so it also works outside this repo.
Here, cases record to and replay from ``cassettes/`` at the repository root."""

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def vcr_cassette_dir() -> str:
    return str(Path(__file__).resolve().parent / "cassettes")
