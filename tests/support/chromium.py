"""Headless Chromium for the HTML tests: find the binary, run it on a page with a throwaway
profile (no network, no sync). Tests that need it skip where no Chromium is on PATH."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def headless(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``page`` with its own throwaway profile (no network, no sync)."""
    cmd = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           *args, page.resolve().as_uri()]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
