"""The workbench features together, as an outside user runs them: a project of its own in a
temporary folder (config, prompt files, folder datasets of small PNGs, a one-line test file),
``python -m pytest`` in a subprocess with the installed plugin, recorded with a key, replayed
without one, and a recording run killed half way and resumed.

The project (:func:`build_project`):

- task ``toy``: 10 artifacts and 6 LSBGs, a stratified sample of 8 drawn with seed 3 (5 + 3),
  asked with the zero-shot ``paper`` prompt, a 3-shot variant of it (``paper-3shot``) and a
  label-permuted template (``paper-permuted``, class blocks marked; ``paper.txt`` is its shift 0);
- task ``wide``: 30 images, ``sample_size = "all"``;
- models: ``scorer`` (score mode: class probabilities), ``pair`` (two replica ``base_url``s, two
  loopback stand-ins) and ``batched`` (the Batch API on the loopback Files + Batches server).

The stand-ins answer from the marked pixel of the query image (``tests/support/openai_stub.py``).
The sample's images are styled by their rank in the stratified draw (recomputed here from the
documented rule, sha256(seed, id) within a class), so every number below is designed:

=====================  ==========================  ==================================
toy sample image       generate (pair, batched)    score (scorer)
=====================  ==========================  ==================================
artifact, rank 0       READS_PROMPT: right always  the number shown: right always
artifact, rank 1       CORRECT "Category 0"        "0"
artifact, rank 2       NEEDS_EXAMPLES: wrong       "0" (score ignores examples)
                       zero-shot, right few-shot
artifact, rank 3       UNPARSEABLE                 "0" (its label, at p = 0.7)
artifact, rank 4       ZERO "0"                    "0"
LSBG, rank 0           READS_PROMPT                the number shown
LSBG, rank 1           WRONG "Category 0"          "0"
LSBG, rank 2           VERBOSE "category 1"        "1"
=====================  ==========================  ==================================

generate: zero-shot 5/8 (1 unparseable), 3-shot 6/8, permuted shift 0 5/8 and shift 1 4/8
(consistent 2/8: the two prompt readers); score: 7/8, 7/8, shifts 7/8 and 3/8 (consistent 2/8).
``wide`` cycles through five styles, three answered right in generate mode (18/30) and all but
WRONG in score mode (24/30).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.batch_server import BatchServer
from tests.support.openai_stub import (
    BARE,
    CORRECT,
    NEEDS_EXAMPLES,
    READS_PROMPT,
    UNPARSEABLE,
    VERBOSE,
    WRONG,
    ZERO,
    OpenAIStub,
    mark_image,
)

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-workbench-DISTINCTIVE-KEY-3c1d9e"
KEY_ENV = "WORKBENCH_TEST_KEY"
CASSETTES = "cassettes-from-test-server"
CLASSES = ["artifact", "lsbg"]
# Words only one class's block holds: what READS_PROMPT images look for in the prompt.
CLASS_TEXTS = ["an artifact, such as", "a low-surface-brightness galaxy"]
BLOCKS = textwrap.dedent("""\
    You are tasked with classifying astronomical images into two categories.

    {{#class 0}}Category {{class 0}}: an artifact, such as a bright star, a reflection or diffuse light.{{/class}}
    {{#class 1}}Category {{class 1}}: a low-surface-brightness galaxy, diffuse and well centred.{{/class}}

    Respond with the category number only.
""")
PAPER = BLOCKS.replace("{{#class 0}}", "").replace("{{#class 1}}", "").replace("{{/class}}", "") \
    .replace("{{class 0}}", "0").replace("{{class 1}}", "1")  # the template's shift 0, byte for byte
N_TOY = {0: 10, 1: 6}
SEED, SAMPLE_SIZE = 3, 8
SAMPLE_STYLES = {0: [READS_PROMPT, CORRECT, NEEDS_EXAMPLES, UNPARSEABLE, ZERO], 1: [READS_PROMPT, WRONG, VERBOSE]}
WIDE_STYLES = [CORRECT, WRONG, UNPARSEABLE, VERBOSE, BARE]  # image i: style i % 5, class i % 2
N_WIDE = 30
MODELS = ["scorer", "pair", "batched"]
SELECT = ["--bench-task", "toy", "--bench-task", "wide", *[a for m in MODELS for a in ("--bench-model", m)]]
TIMING = ("wall_s", "cached", "traffic")  # what differs between a live run and its replay
SUMMARY_TIMING = ("wall_s", "images_per_s", "cached")


def toy_ids() -> dict[int, list[str]]:
    return {c: [f"{CLASSES[c]}/{CLASSES[c][0]}{i:02d}.png" for i in range(n)] for c, n in N_TOY.items()}


def stratified_sample(seed: int) -> dict[int, list[str]]:
    """The documented rule, recomputed: per class its share of the sample (5 + 3 of 8 here),
    taken in the order of sha256(seed, id)."""
    rank = lambda sid: hashlib.sha256(f"{seed}\0{sid}".encode()).digest()
    return {c: sorted(ids, key=rank)[:len(SAMPLE_STYLES[c])] for c, ids in toy_ids().items()}


def _png(path: Path, label: int, style: int, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = mark_image(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), label=label, style=style, n_classes=2)
    Image.fromarray(image).save(path)


def build_project(root: Path, *, scorer: str, pair: list[str], batched: str) -> Path:
    """The outside project: bench.toml, prompts, two folder datasets, pytest.ini and a test file."""
    rng = np.random.default_rng(11)
    sample = stratified_sample(SEED)
    for c, ids in toy_ids().items():
        for sid in ids:  # sample images styled by rank; the rest (the few-shot pool) answered right
            style = SAMPLE_STYLES[c][sample[c].index(sid)] if sid in sample[c] else CORRECT
            _png(root / "images" / "toy" / sid, c, style, rng)
    for i in range(N_WIDE):
        _png(root / "images" / "wide" / CLASSES[i % 2] / f"w{i:02d}.png", i % 2, WIDE_STYLES[i % 5], rng)
    (root / "prompts" / "toy").mkdir(parents=True)
    (root / "prompts" / "toy" / "paper.txt").write_text(PAPER)
    (root / "prompts" / "toy" / "blocks.txt").write_text(BLOCKS)
    (root / "prompts" / "wide").mkdir(parents=True)
    (root / "prompts" / "wide" / "paper.txt").write_text(PAPER)
    replicas = ", ".join(f'"{u}"' for u in pair)
    (root / "bench.toml").write_text(textwrap.dedent(f"""\
        [datasets.toy-cutouts]
        format = "folder"
        path = "images/toy"
        classes = ["artifact", "lsbg"]

        [datasets.wide-field]
        format = "folder"
        path = "images/wide"
        classes = ["artifact", "lsbg"]

        [tasks.toy]
        dataset = "toy-cutouts"
        classes = ["artifact", "LSBG"]
        sample_size = {SAMPLE_SIZE}
        sample = "stratified"
        seed = {SEED}
        prompts = ["paper", "paper-3shot", "paper-permuted"]

        [tasks.toy.variants.paper-3shot]
        file = "paper"
        shots = 3
        shot_seed = 1

        [tasks.toy.variants.paper-permuted]
        file = "blocks"
        permute_labels = true

        [tasks.wide]
        dataset = "wide-field"
        classes = ["artifact", "LSBG"]
        sample_size = "all"

        [models.scorer]
        provider = "openai"
        model = "stub-vlm"
        base_url = "{scorer}"
        api_key_env = "{KEY_ENV}"
        mode = "score"
        concurrency = 4

        [models.pair]
        provider = "openai"
        model = "stub-vlm"
        base_url = [{replicas}]
        api_key_env = "{KEY_ENV}"
        concurrency = 4

        [models.batched]
        provider = "openai"
        model = "stub-vlm"
        base_url = "{batched}"
        api_key_env = "{KEY_ENV}"
        batch = true
        batch_poll_s = 0.01
        prices = {{ input_per_mtok = 2.5, output_per_mtok = 10.0, batch = 0.5 }}

        [thresholds]
        "toy/scorer" = {{ min_accuracy = 0.8, note = "designed: 7 of 8" }}
    """))
    (root / "pytest.ini").write_text(f"[pytest]\nbench_cassette_dir = {CASSETTES}\n")
    (root / "test_bench.py").write_text("def test_case(bench_case, bench_run):\n    bench_run(bench_case)\n")
    return root


def pytest_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--bench-config", "bench.toml",
            "--bench-no-progress", "test_bench.py", *args]


def user_env(*, key: bool) -> dict[str, str]:
    """The outside project's environment: this checkout on the path, no astrobench settings
    inherited, the key only when asked for."""
    env = {k: v for k, v in os.environ.items() if k not in (
        "ASTROBENCH_CONFIG", "ASTROBENCH_CASSETTE_DIR", "ASTROBENCH_FIXTURES_DIR", KEY_ENV)}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return {**env, KEY_ENV: KEY} if key else env


def run_pytest(project: Path, *args: str, key: bool) -> subprocess.CompletedProcess:
    return subprocess.run(pytest_args(*args), cwd=project, env=user_env(key=key), capture_output=True, text=True,
                          timeout=300, check=False)


def cases_of(path: Path) -> dict[str, dict]:
    return {c["case_id"]: c for c in json.loads(path.read_text())["cases"]}


def without_timing(case: dict) -> dict:
    out = {k: v for k, v in case.items() if k not in TIMING}
    out["summary"] = {k: v for k, v in case["summary"].items() if k not in SUMMARY_TIMING}
    return out


def by_rank(case: dict) -> dict[str, dict]:
    """A toy case's predictions by the designed name of their image ("artifact 2": class 0, rank 2)."""
    sample = stratified_sample(SEED)
    names = {sid: f"{CLASSES[c]} {i}" for c, ids in sample.items() for i, sid in enumerate(ids)}
    return {names[p["sample_id"]]: p for p in case["predictions"]}


# -- recorded with a key, replayed without one --------------------------------------------------
def test_the_workbench_features_record_replay_and_report_together(tmp_path):
    project = tmp_path / "project"
    with OpenAIStub(class_texts=CLASS_TEXTS) as scorer, OpenAIStub(class_texts=CLASS_TEXTS, delay_s=0.01) as a, \
            OpenAIStub(class_texts=CLASS_TEXTS, delay_s=0.01) as b, BatchServer(class_texts=CLASS_TEXTS) as batch:
        build_project(project, scorer=scorer.base_url, pair=[a.base_url, b.base_url], batched=batch.base_url)
        live = run_pytest(project, *SELECT, "--record-mode", "once", "--bench-results", "live.json",
                          "--bench-html", "live.html", "--bench-detail", "-v", key=True)
        assert live.returncode == 0, live.stdout + live.stderr
        asked = {"scorer": len(scorer.requests), "pair": (len(a.requests), len(b.requests)),
                 "batch chat": len(batch.requests), "batch lines": sum(len(u) for u in batch.uploads)}
        calls = dict(batch.calls)
        pair_requests = a.requests + b.requests

        replay = run_pytest(project, *SELECT, "--record-mode", "none", "--bench-results", "replay.json",
                            "--bench-html", "replay.html", key=False)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        # a quick look at the first 4 images of every case (a prefix of the stratified sample)
        limited = run_pytest(project, *SELECT, "--record-mode", "none", "--bench-limit", "4", "--bench-results",
                             "limited.json", key=False)
        assert limited.returncode == 0, limited.stdout + limited.stderr
        # the replays asked nothing: no chat request, no file, no batch
        assert (len(scorer.requests), len(a.requests) + len(b.requests), len(batch.requests)) == (62, 62, 0)
        assert dict(batch.calls) == calls

    # every answer was asked once: toy 8 + 8 (3-shot) + 2 x 8 (two label shifts), wide 30
    assert asked["scorer"] == 62 and sum(asked["pair"]) == 62 and min(asked["pair"]) >= 1
    assert asked["batch chat"] == 0 and asked["batch lines"] == 62  # every batch answer came by batch
    assert calls["batches.create"] == 5  # one per round: toy, toy 3-shot, two shifts, wide
    # what the recording layer tells the user reaches the terminal, not only pytest's captured output
    assert "astrobench: batched: submitted batch batch_1 (8 requests" in live.stdout

    cases = cases_of(project / "live.json")
    ids = {f"{t}-{m}{p}" for m in MODELS for t, p in [("toy", ""), ("toy", "-paper-3shot"),
                                                      ("toy", "-paper-permuted"), ("wide", "")]}
    assert set(cases) == ids

    # the stratified sample with its seed: 5 artifacts and 3 LSBGs, the same for every case
    sample = stratified_sample(SEED)
    for m in MODELS:
        assert {p["sample_id"] for p in cases[f"toy-{m}"]["predictions"]} == set(sample[0] + sample[1])
        assert [p["true"] for p in cases[f"toy-{m}"]["predictions"]].count(1) == 3
    assert len(cases["wide-pair"]["predictions"]) == N_WIDE  # sample_size = "all"

    # accuracy, designed (see the module docstring)
    accuracy = {c: cases[c]["metrics"]["accuracy"] for c in ids}
    for m, (zero, few, shifts, wide) in {"scorer": (7 / 8, 7 / 8, [7 / 8, 3 / 8], 24 / 30),
                                         "pair": (5 / 8, 6 / 8, [5 / 8, 4 / 8], 18 / 30),
                                         "batched": (5 / 8, 6 / 8, [5 / 8, 4 / 8], 18 / 30)}.items():
        assert (accuracy[f"toy-{m}"], accuracy[f"toy-{m}-paper-3shot"], accuracy[f"wide-{m}"]) == (zero, few, wide), m
        assert accuracy[f"toy-{m}-paper-permuted"] == shifts[0]  # the case's own numbers are shift 0's
        perm = cases[f"toy-{m}-paper-permuted"]["permutation"]
        assert (perm["shifts"], perm["n"], perm["accuracies"]) == (2, 8, shifts), m
        assert (perm["consistent"], perm["consistent_accuracy"]) == (2, 2 / 8), m
    assert cases["toy-pair"]["metrics"]["unparseable"] == 1 and cases["toy-scorer"]["metrics"]["unparseable"] == 0
    assert by_rank(cases["toy-pair"])["artifact 2"]["parsed"] == 1  # needs examples: wrong zero-shot
    assert by_rank(cases["toy-pair-paper-3shot"])["artifact 2"]["parsed"] == 0  # ... right with them
    # numbers answered (shown numbers, both shifts): generate "0" 8, "1" 6, no class 2; score "0" 12, "1" 4
    for m, counts, no_class in [("pair", [8, 6], 2), ("batched", [8, 6], 2), ("scorer", [12, 4], 0)]:
        perm = cases[f"toy-{m}-paper-permuted"]["permutation"]
        assert (perm["digit_counts"], perm["no_class"]) == (counts, no_class), m
    assert by_rank(cases["toy-pair-paper-permuted"])["lsbg 1"]["shift_parsed"] == [0, 1]

    # few-shot: 3 examples per class from outside the sample, in rounds, the same for every model
    shots = cases["toy-pair-paper-3shot"]["shots"]
    assert shots["k"] == 3 and shots["seed"] == 1
    assert [e["label"] for e in shots["examples"]] == [0, 1, 0, 1, 0, 1]
    assert {e["id"] for e in shots["examples"] if e["label"] == 1} == set(toy_ids()[1]) - set(sample[1])
    assert {e["id"] for e in shots["examples"] if e["label"] == 0} <= set(toy_ids()[0]) - set(sample[0])
    assert cases["toy-scorer-paper-3shot"]["shots"] == cases["toy-batched-paper-3shot"]["shots"] == shots
    assert all(cases[c]["shots"] is None for c in ids if "3shot" not in c)
    few_shot_sent = [r for r in pair_requests if len(r["marks"]) > 1]
    assert len(few_shot_sent) == 8 and all([m[0] % 10 for m in r["marks"][:-1]] == [0, 1, 0, 1, 0, 1]
                                           for r in few_shot_sent)
    # the permuted variant sent the template's two renderings, shift 0 being paper.txt byte for byte
    artifact, galaxy = PAPER.splitlines()[2:4]  # the two class blocks, as shift 0 shows them
    shift_1 = PAPER.replace(f"{artifact}\n{galaxy}", f"{galaxy.replace('Category 1', 'Category 0')}\n"
                                                       f"{artifact.replace('Category 0', 'Category 1')}")
    assert {r["texts"][0] for r in pair_requests if len(r["marks"]) == 1} == {PAPER, shift_1}

    # class probabilities: the score model's calibration and curves (2 positives at 0.778, 1 at 0.222)
    cal = cases["toy-scorer"]["summary"]["calibration"]
    [used] = [b for b in cal["reliability"] if b["count"]]
    assert (used["count"], used["accuracy"]) == (8, 7 / 8) and used["confidence"] == pytest.approx(0.7 / 0.9)
    assert cal["roc"]["auc"] == pytest.approx(12.5 / 15) and cal["pr"]["prevalence"] == 3 / 8
    assert cal["pr"]["average_precision"] == pytest.approx(2 / 3 + 1 / 3 * 3 / 8)
    assert all(cases[c]["summary"]["calibration"] is None for c in ids if "scorer" not in c)

    # traffic: what the live requests met, per replica for the pair; batch answers are not live traffic
    traffic = cases["toy-pair"]["traffic"]
    assert traffic["requests"] == 8 and traffic["rate_limited"] == 0 and traffic["failed_attempts"] == 0
    assert len(traffic["replicas"]) == 2 and sum(r["answers"] for r in traffic["replicas"]) == 8
    assert cases["toy-pair-paper-permuted"]["traffic"]["requests"] == 16
    assert cases["wide-scorer"]["traffic"]["requests"] == 30 and "replicas" not in cases["wide-scorer"]["traffic"]
    # batch answers: costed at the batch price, counted apart
    assert cases["toy-batched"]["usage"] == {"prompt_tokens": 800, "completion_tokens": 40,
                                             "batch_prompt_tokens": 800, "batch_completion_tokens": 40}
    assert cases["toy-batched"]["summary"]["cost_usd"] == pytest.approx(8 * 0.00015, abs=1e-12)
    assert cases["toy-scorer"]["passed"] is True and cases["toy-pair"]["passed"] is None

    # the replay: same results but what only a live run has (timing, traffic); every answer replayed
    replayed = cases_of(project / "replay.json")
    assert set(replayed) == ids
    for c in ids:
        assert without_timing(replayed[c]) == without_timing(cases[c]), c
        assert replayed[c]["traffic"] is None and replayed[c]["cached"] == replayed[c]["metrics"]["n"], c
        assert cases[c]["cached"] == 0, c

    # --bench-limit 4 replays the first 4 answers of each case: the same examples, the same predictions
    for c, case in cases_of(project / "limited.json").items():
        assert case["predictions"] == cases[c]["predictions"][:4], c
        assert case["shots"] == cases[c]["shots"], c

    # the HTML shows every view; the replay's shows no live traffic
    page = (project / "live.html").read_text()
    for view in ['<table id="measured"', '<table id="permutation"', '<table id="pairs"',
                 'id="shifts-toy-pair-paper-permuted"', 'id="shots-toy-batched-paper-3shot"',
                 "Reliability diagram of toy-scorer", "ROC curve of toy-scorer", "Precision-recall curve of toy-scorer",
                 "traffic: 8 requests sent", "few-shot: 3 example(s) per class (shot_seed 1)"]:
        assert view in page, view
    assert page.count('alt="confusion matrix of ') == 12
    assert "Reliability diagram of toy-pair" not in page  # no probabilities, no chart
    replay_page = (project / "replay.html").read_text()
    assert "traffic:" not in replay_page and "ROC curve of toy-scorer-paper-permuted" in replay_page

    # no key anywhere: outputs, recordings, results, pages
    assert KEY not in live.stdout + live.stderr + replay.stdout + replay.stderr
    written = [p for p in project.rglob("*") if p.is_file() and p.suffix != ".png"]
    assert len([p for p in written if p.suffix == ".jsonl"]) == 12
    for path in written:
        assert KEY not in path.read_text(errors="replace"), path


def settled(count: Callable[[], int], *, quiet_s: float = 0.3, within_s: float = 30.0) -> int:
    """``count()`` once it has not changed for ``quiet_s`` (requests a killed client sent last are
    still being read by the stand-ins' threads)."""
    last, since, deadline = count(), time.monotonic(), time.monotonic() + within_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.02)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last


def journaled(journal: Path) -> list[str]:
    """The answers a recording run has made durable so far (its journal's complete lines)."""
    text = journal.read_text() if journal.exists() else ""
    return [ln for ln in text.splitlines(keepends=True) if ln.startswith('{"key"') and ln.endswith("\n")]


# -- an unlucky day: killed mid-recording, resumed -------------------------------------------------
def test_a_recording_killed_mid_case_resumes_asking_only_what_is_missing(tmp_path):
    """SIGKILL the recording run of ``wide-pair`` (30 answers over two replicas) after a few
    answers; the same command folds the journal in, asks only the rest, and its results equal
    those of a run that was never interrupted."""
    project = tmp_path / "project"
    select = ["--bench-task", "wide", "--bench-model", "pair", "--record-mode", "once"]
    with OpenAIStub(delay_s=0.1) as a, OpenAIStub(delay_s=0.1) as b, OpenAIStub() as unused:
        build_project(project, scorer=unused.base_url, pair=[a.base_url, b.base_url], batched=unused.base_url)
        proc = subprocess.Popen(pytest_args(*select), cwd=project, env=user_env(key=True),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        recording = project / CASSETTES / "wide+pair+paper.jsonl"
        journal = recording.with_name(recording.name + ".journal")
        deadline = time.monotonic() + 120
        while len(journaled(journal)) < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert not recording.exists()  # the run never finished
        kept = journaled(journal)
        assert 8 <= len(kept) < N_WIDE, len(kept)
        a.delay_s = b.delay_s = 0.0
        before = settled(lambda: len(a.requests) + len(b.requests))
        resumed = run_pytest(project, *select, "--bench-results", "resumed.json", key=True)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert len(a.requests) + len(b.requests) - before == N_WIDE - len(kept)  # only what was missing
        assert f"astrobench: recovered {len(kept)} answers of an interrupted recording" in resumed.stdout
        assert recording.exists() and not journal.exists()

        before = len(a.requests) + len(b.requests)
        whole = run_pytest(project, *select, "--bench-cassette-dir", "uninterrupted", "--bench-results",
                           "whole.json", key=True)
        assert whole.returncode == 0, whole.stdout + whole.stderr
        assert len(a.requests) + len(b.requests) - before == N_WIDE
    [resumed_case] = cases_of(project / "resumed.json").values()
    [whole_case] = cases_of(project / "whole.json").values()
    assert resumed_case["metrics"]["accuracy"] == 18 / 30
    assert without_timing(resumed_case) == without_timing(whole_case)
