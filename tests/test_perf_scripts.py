"""The performance scripts under tests/perf/ still run (tiny sizes, no timing asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cassette_replay_benchmark_runs_and_checks_answers():
    proc = run("tests/perf/bench_cassette_replay.py", "20", "--scales", "30,60", "--rerecord", "20,40")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for row in ("floor: MockTransport from a dict", "ours: recording index", "vcrpy defaults", "floor / ours",
                "ours at scale", "--record-mode all: 20 -> 40 answers"):
        assert row in proc.stdout


def test_gpu_script_runs_at_toy_size_on_cpu():
    proc = run("tests/perf/gpu_llava.py", "--toy")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for row in ("generate 200 tok + parse, batch 1 (paper)", "score, batch 1 ", "score, batch 8 ",
                "score, batch 32 "):
        assert row in proc.stdout
