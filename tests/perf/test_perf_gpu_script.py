"""tests/perf/gpu_llava.py (a script: real-size LLaVA-NeXT on a GPU) still runs, at toy size on the CPU.

It takes 45-50 s on a 2-core CPU, so it runs with ``make perf`` (timings on)
and is skipped by ``make test`` (``--benchmark-disable``), where
tests/test_hf_provider.py (``test_4bit_bitsandbytes_on_cpu`` and the rest)
covers the provider code the script drives. Nothing is timed or asserted
about speed here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_gpu_script_runs_at_toy_size_on_cpu(timed: bool) -> None:
    if not timed:
        pytest.skip("toy run of gpu_llava.py (~45 s): runs with `make perf`, not with --benchmark-disable")
    pytest.importorskip("transformers")
    script = ["tests/perf/gpu_llava.py", "--toy", "--images", "8", "--gen-images", "1"]
    proc = subprocess.run([sys.executable, *script], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for row in ("generate 200 tok + parse, batch 1 (paper)", "score, batch 1 ", "score, batch 8 ",
                "score, batch 32 "):
        assert row in proc.stdout
