"""The ``astrobench`` command (also ``python -m benchmark``)."""

from __future__ import annotations

from benchmark.__main__ import main

__all__ = ["main"]
