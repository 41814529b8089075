"""Fixtures shared by several test modules (builders live in tests/support/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The tests never reach the Hugging Face hub (models are built in the tests and loaded from folders).
os.environ["HF_HUB_OFFLINE"] = "1"

from tests.support.e2e_world import serve_world


@pytest.fixture
def world(tmp_path):
    """The end-to-end world (tests.support.e2e_world): ``(run, stub, server, tmp_path)``."""
    with serve_world(tmp_path) as w:
        yield w


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaVA-NeXT of the real architecture, saved with its processor."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.support.tiny_llava import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))
