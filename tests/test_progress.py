"""Per-case progress: what is printed, when, and that a plain pytest run shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmark.progress import Progress
from tests.support.folder_task import KEY, folder_world, write_toml
from tests.support.openai_stub import OpenAIStub

REPO = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_non_tty_prints_a_line_every_step_with_rate_and_eta():
    clock, lines = Clock(), []
    p = Progress(lambda text, redraw: lines.append((text, redraw)), tty=False, step_percent=25, clock=clock)
    p.start("lsbg/gpt-4o", 100, replayed=20)
    for _ in range(80):
        clock.t += 0.5  # 2 img/s live
        p.advance()
    p.close()
    assert all(not redraw for _, redraw in lines)
    texts = [t for t, _ in lines]
    assert texts[0] == "lsbg/gpt-4o: 20/100 (20%) 0.0 img/s ETA - [live 0, replayed 20]"
    assert texts[1] == "lsbg/gpt-4o: 25/100 (25%) 2.0 img/s ETA 38s [live 5, replayed 20]"
    assert [t.split(":")[1].split("(")[1].split(")")[0] for t in texts] == ["20%", "25%", "50%", "75%", "100%"]
    assert texts[-1].endswith("2.0 img/s done [live 80, replayed 20]")


def test_tty_redraws_at_most_every_interval_and_ends_with_a_newline():
    clock, lines = Clock(), []
    p = Progress(lambda text, redraw: lines.append((text, redraw)), tty=True, interval_s=1.0, clock=clock)
    p.start("morphology/llava", 1000)
    for _ in range(1000):
        clock.t += 0.01
        p.advance()
    p.close()
    redraws = [t for t, r in lines if r]
    assert 10 <= len(redraws) <= 13  # 10 s of work, one redraw a second (+ start, end)
    assert redraws[-1].startswith("morphology/llava: 1000/1000 (100%) 100.0 img/s done")
    assert lines[-1] == ("", False)


def test_a_plain_pytest_run_shows_progress(tmp_path, monkeypatch):
    """pytest captures output; the plugin still shows each case's progress (non-TTY: every 10%)."""
    with OpenAIStub() as stub:
        raw = folder_world(tmp_path, stub, 10)
        cfg = write_toml(tmp_path, raw, model_extra='concurrency = 1\n')
        project = tmp_path / "project"
        project.mkdir()
        (project / "test_bench.py").write_text("def test_case(bench_case, bench_run):\n    bench_run(bench_case)\n")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--record-mode", "once", "--bench-config",
             str(cfg), "--bench-task", "toy", "--bench-model", "stub", "test_bench.py"],
            cwd=project, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(REPO), "ASTROBENCH_TEST_KEY": KEY,
                 "ASTROBENCH_CASSETTE_DIR": str(tmp_path / "recorded-from-test-server"),
                 "ASTROBENCH_FIXTURES_DIR": str(tmp_path / "frozen")},
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = [ln for ln in proc.stdout.splitlines() if ln.startswith("toy/stub: ")]
    assert shown, proc.stdout
    assert shown[0].startswith("toy/stub: 0/10 (0%)") and len(shown) == 11, proc.stdout
    assert shown[-1].startswith("toy/stub: 10/10 (100%)") and shown[-1].endswith("[live 10, replayed 0]")
