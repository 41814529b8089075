"""The wheel, installed into a fresh venv, used by an outside project with its own
config, a folder task and the loopback stand-in server.

The fresh venv borrows this environment's third-party packages (a .pth line to
its site-packages, which holds no copy of this project: it is installed there
in editable mode, through a finder that a .pth line does not load), so the test
needs no network; the project itself comes only from the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

from tests.support.folder_task import KEY, folder_world
from tests.support.openai_stub import OpenAIStub

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its python."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(REPO)], capture_output=True, text=True, timeout=300,
                           env=clean_env())
    assert build.returncode == 0, build.stderr
    [wheel] = (tmp / "dist").glob("astro_vlm_bench-*.whl")
    venv.create(tmp / "venv", with_pip=False)
    python = tmp / "venv" / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=300,
                             env=clean_env())  # a PYTHONPATH'd checkout would look installed already
    if install.returncode != 0 and "no such option: --python" in install.stderr:  # pip < 22.3
        pytest.skip("pip too old for --python")
    assert install.returncode == 0, install.stderr
    return python


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ASTROBENCH_CONFIG",
                                                            "ASTROBENCH_CASSETTE_DIR", "ASTROBENCH_FIXTURES_DIR")}
    return {**env, **extra}


def test_the_wheel_carries_the_builtin_benchmark(installed, tmp_path):
    code = ("import benchmark, benchmark.config as c; cfg = c.load_config(); "
            "print(benchmark.__file__); print(sorted(cfg.tasks)); "
            "print(cfg.tasks['lsbg'].prompt_text('paper')[:40])")
    proc = subprocess.run([str(installed), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env=clean_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    where, tasks, prompt = proc.stdout.splitlines()[:3]
    assert "site-packages" in where and str(REPO) not in where
    assert tasks == "['lsbg', 'morphology', 'morphology-merged']"
    assert prompt.strip()
    helptext = subprocess.run([str(installed.parent / "astrobench"), "--help"], cwd=tmp_path,
                              capture_output=True, text=True, env=clean_env(), timeout=120)
    assert helptext.returncode == 0 and "report" in helptext.stdout


def test_an_outside_project_runs_its_own_folder_task(installed, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    with OpenAIStub() as stub:
        raw = folder_world(project, stub, 6)
        (project / "bench.toml").write_text(textwrap.dedent(f"""
            [datasets.toy]
            format = "folder"
            path = "images"
            classes = ["artifact", "lsbg"]
            [tasks.toy]
            dataset = "toy"
            classes = ["artifact", "lsbg"]
            prompts = ["paper"]
            prompt_dir = "prompts/toy"
            [models.stub]
            provider = "openai"
            model = "stub-vlm"
            base_url = "{stub.base_url}"
            api_key_env = "ASTROBENCH_TEST_KEY"
        """))
        assert raw["datasets"]["toy"]["path"] == str(project / "images")
        (project / "test_bench.py").write_text("def test_case(bench_case, bench_run):\n    bench_run(bench_case)\n")
        run = [str(installed), "-m", "pytest", "-p", "no:cacheprovider", "--bench-config", "bench.toml",
               "--bench-task", "toy", "--bench-model", "stub", "--bench-results", "out.json", "test_bench.py"]
        first = subprocess.run(run + ["--record-mode", "once"], cwd=project, capture_output=True, text=True,
                               env=clean_env(ASTROBENCH_TEST_KEY=KEY), timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        assert len(stub.requests) == 6
    again = subprocess.run(run, cwd=project, capture_output=True, text=True, env=clean_env(), timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "astrobench leaderboard" in again.stdout and "toy     stub" in again.stdout
    [recording] = project.rglob("toy+stub+paper.jsonl")
    assert project in recording.parents  # the project's, not the package's
    assert (project / "out.json").exists()
