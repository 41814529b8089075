"""Installing astrobench must not break other projects' pytest runs: its options
are namespaced (``--bench-*``), so a project's own ``--model`` still works."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_an_outside_conftest_defining_model_coexists(tmp_path):
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        def pytest_addoption(parser):
            parser.addoption("--model", default="resnet50", help="this project's own model option")
            parser.addoption("--task", default="segmentation")
            parser.addoption("--limit", type=int, default=3)
    """))
    (tmp_path / "test_mine.py").write_text(textwrap.dedent("""
        def test_options(request):
            assert request.config.getoption("--model") == "vit-b16"
            assert request.config.getoption("--task") == "segmentation"
            assert request.config.getoption("--limit") == 3
    """))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--model", "vit-b16",
                           "test_mine.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "astro-vlm-bench" in proc.stdout  # the plugin was loaded, and stayed out of the way
    assert "astrobench leaderboard" not in proc.stdout
    helptext = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--help"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, env=env).stdout
    assert "--bench-task=NAME" in helptext and "this project's own model option" in helptext
