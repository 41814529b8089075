"""One Report per run: a plugin run reads published.toml once, builds its Report once,
and renders every output from it (terminal table, detail, Markdown, HTML, results JSON),
so the terminal and the files show the same numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from benchmark.leaderboard import PUBLISHED, load_published

from tests.support.openai_stub import STYLES, OpenAIStub, mark_image

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-reporting-test-key"
N = 10  # styles cycle CORRECT, WRONG, UNPARSEABLE, VERBOSE, BARE: 6 of 10 right, 2 unparseable

# Loaded into the inner pytest run: counts calls of load_published (wherever a benchmark
# module bound it) and of Report.build, and writes the counts per process when pytest ends.
COUNTING_CONFTEST = """
import json
import os
import sys

import benchmark.leaderboard
import benchmark.report

COUNTS = {"load_published": 0, "build": 0}
_load = benchmark.leaderboard.load_published
_build = benchmark.report.Report.build.__func__


def load_published(*args, **kwargs):
    COUNTS["load_published"] += 1
    return _load(*args, **kwargs)


def build(cls, *args, **kwargs):
    COUNTS["build"] += 1
    return _build(cls, *args, **kwargs)


for _mod in list(sys.modules.values()):
    if getattr(_mod, "__name__", "").startswith("benchmark") and getattr(_mod, "load_published", None) is _load:
        _mod.load_published = load_published
benchmark.report.Report.build = classmethod(build)


def pytest_unconfigure(config):
    who = config.workerinput["workerid"] if hasattr(config, "workerinput") else "controller"
    with open(os.path.join(os.environ["COUNTS_DIR"], who + ".json"), "w") as fh:
        json.dump(COUNTS, fh)
"""


def test_load_published_is_parsed_once_per_path():
    assert load_published() is load_published(PUBLISHED) is load_published(str(PUBLISHED))
    citation, rows = load_published()  # still unpacks as (citation, rows)
    assert "Tanoglidis" in citation and rows


class _Tables(HTMLParser):
    """The cells of each table of the HTML page, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._id: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._id = dict(attrs).get("id") or ""
            self.tables[self._id] = []
        elif tag == "tr" and self._id is not None:
            self.tables[self._id].append([])

    def handle_endtag(self, tag):
        if tag == "table":
            self._id = None

    def handle_data(self, data):
        if self._id is not None and self.tables[self._id] and data.strip():
            self.tables[self._id][-1].append(data.strip())


def _world(tmp_path: Path, base_url: str) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(N):
        folder = tmp_path / "images" / ("artifact" if i % 2 == 0 else "lsbg")
        folder.mkdir(parents=True, exist_ok=True)
        im = mark_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), label=i % 2,
                        style=STYLES[i % len(STYLES)], n_classes=2)
        Image.fromarray(im).save(folder / f"img{i:03d}.png")
    cfg = tmp_path / "toy.toml"
    # the built-in lsbg task on a local folder, so the published lsbg rows are shown too
    cfg.write_text(textwrap.dedent(f"""
        [datasets.toy]
        format = "folder"
        path = "{tmp_path / 'images'}"
        classes = ["artifact", "lsbg"]
        [tasks.lsbg]
        dataset = "toy"
        sample_size = {N}
        [models.stub]
        provider = "openai"
        model = "stub-vlm"
        base_url = "{base_url}"
        api_key_env = "ASTROBENCH_TEST_KEY"
        concurrency = 1
    """))
    return cfg


@pytest.mark.parametrize("dist", [["-p", "no:xdist"], ["-n", "1"]], ids=["serial", "xdist"])
def test_a_run_reads_published_once_builds_one_report_and_its_outputs_agree(tmp_path, dist):
    project, counts, out = tmp_path / "project", tmp_path / "counts", tmp_path / "out"
    for d in (project, counts, out):
        d.mkdir()
    (project / "conftest.py").write_text(COUNTING_CONFTEST)
    (project / "test_bench.py").write_text("def test_case(bench_case, bench_run):\n    bench_run(bench_case)\n")
    with OpenAIStub() as stub:
        cfg = _world(tmp_path, stub.base_url)
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *dist, "--record-mode", "once",
             "--bench-config", str(cfg), "--bench-task", "lsbg", "--bench-model", "stub", "--bench-no-progress",
             "--bench-results", str(out / "results.json"), "--bench-md", str(out / "board.md"),
             "--bench-html", str(out / "board.html"), "--bench-detail", "test_bench.py"],
            check=False, cwd=project, capture_output=True, text=True, timeout=180,
            env={**os.environ, "PYTHONPATH": str(REPO), "ASTROBENCH_TEST_KEY": KEY, "COUNTS_DIR": str(counts),
                 "ASTROBENCH_CASSETTE_DIR": str(tmp_path / "cassettes"),
                 "ASTROBENCH_FIXTURES_DIR": str(tmp_path / "frozen"), "COLUMNS": "200"},
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(stub.requests) == N

    # -- once: one parse of published.toml, one Report, in the process that reports
    per_process = {p.stem: json.loads(p.read_text()) for p in counts.glob("*.json")}
    assert per_process["controller"] == {"load_published": 1, "build": 1}, (per_process, proc.stdout)
    for worker, seen in per_process.items():  # xdist workers send results back and report nothing
        assert worker == "controller" or seen == {"load_published": 0, "build": 0}, per_process

    # -- the terminal and the files agree
    doc = json.loads((out / "results.json").read_text())
    [case] = doc["cases"]
    acc = case["metrics"]["accuracy"]
    assert acc == pytest.approx(0.6) and case["metrics"]["unparseable"] == 2
    assert "summary" in case  # the results JSON is the Report's document
    shown = f"{acc:.3f}"
    published = [f"{p['accuracy']:.3f}" for p in doc["published"]["rows"] if p["task"] == "lsbg"]
    assert published

    text = proc.stdout.split("astrobench leaderboard")[1]
    table, detail = text.split("astrobench detail")
    measured, reference = table.split("Published reference rows (not measured here)")
    [row] = [line.split() for line in measured.splitlines() if line.startswith("lsbg ")]
    assert row[:5] == ["lsbg", "stub", "paper", str(N), shown]
    assert [line.split()[0] for line in reference.splitlines() if "published:" in line] == ["lsbg"] * len(published)
    assert all(a in reference for a in published)
    assert f"accuracy {shown} (95% CI Wilson" in detail and "unparseable 2" in detail
    assert "task: Low-surface-brightness galaxy (1) vs artifact (0)" in detail  # the task's description

    md = (out / "board.md").read_text()
    md_rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| lsbg")]
    assert md_rows[0][:5] == ["lsbg", "stub", "paper", str(N), shown]
    assert [r[3] for r in md_rows[1:]] == published  # the published rows: task, model, n, accuracy

    page = _Tables()
    page.feed((out / "board.html").read_text())
    assert page.tables["measured"][1][:5] == ["lsbg", "stub", "paper", str(N), shown]
    assert [r[3] for r in page.tables["published"][1:]] == published
