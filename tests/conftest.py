"""Fixtures shared by several test modules (builders live in tests/support/)."""

from __future__ import annotations

import pytest

from tests.support.e2e_world import serve_world


@pytest.fixture
def world(tmp_path):
    """The end-to-end world (tests.support.e2e_world): ``(run, stub, server, tmp_path)``."""
    with serve_world(tmp_path) as w:
        yield w
