"""The whole path, as a user runs it: `pytest cases` with a user config, data
in the datasets' real formats served over loopback HTTP, the real `openai`
client talking to a loopback chat-completions server, parser, metrics,
leaderboard text and JSON. Accuracies are exact: the stand-in's answers are
known from the images it receives."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.support.e2e_world import (KEY, LSBG_STYLES, MORPH_LABELS, MORPH_STYLES, REPO,
                                     expected_accuracy)

# The world fixture (tests/conftest.py) serves the data and the model of tests.support.e2e_world.


def test_full_run_exact_accuracies_leaderboard_and_json(world):
    run, stub, server, tmp = world
    out = tmp / "results.json"
    proc = run("--bench-results", str(out), "-v")
    text = proc.stdout + proc.stderr
    # morphology misses its 0.62 threshold, so the run fails (exit 1)
    assert proc.returncode == 1, text
    assert "cases/test_cases.py::test_case[lsbg-gpt-4o] PASSED" in text
    # the built-in open model, the hub offline and nothing cached: skipped, one line per case
    assert "cases/test_cases.py::test_case[morphology-smolvlm] SKIPPED" in text
    assert ("  morphology-smolvlm: model 'smolvlm' needs the weights of 'HuggingFaceTB/SmolVLM-256M-Instruct', "
            "which are not in the Hugging Face cache") in text
    assert "FAILED cases/test_cases.py::test_case[morphology-gpt-4o]" in text

    lsbg_acc = expected_accuracy(LSBG_STYLES[:10], [i % 2 for i in range(10)])
    morph_acc = expected_accuracy(MORPH_STYLES, MORPH_LABELS)
    merged_acc = expected_accuracy(MORPH_STYLES, MORPH_LABELS, merge=[0, 1, 1, 2])
    assert (lsbg_acc, morph_acc, merged_acc) == (0.8, 7 / 12, 0.75)

    doc = json.loads(out.read_text())
    cases = {c["case_id"]: c for c in doc["cases"]}
    assert set(cases) == {"lsbg-gpt-4o", "morphology-gpt-4o", "morphology-merged-gpt-4o"}
    assert cases["lsbg-gpt-4o"]["metrics"]["accuracy"] == pytest.approx(lsbg_acc)
    assert cases["lsbg-gpt-4o"]["metrics"]["n"] == 10
    assert cases["lsbg-gpt-4o"]["metrics"]["unparseable"] == 1
    assert cases["morphology-gpt-4o"]["metrics"]["accuracy"] == pytest.approx(morph_acc)
    assert cases["morphology-merged-gpt-4o"]["metrics"]["accuracy"] == pytest.approx(merged_acc)
    assert cases["morphology-merged-gpt-4o"]["derived_from"] == "morphology"
    # usage is counted once, on the case that made the calls
    assert cases["morphology-gpt-4o"]["usage"] == {"prompt_tokens": 1200, "completion_tokens": 60}
    assert cases["morphology-merged-gpt-4o"]["usage"] == {}
    preds = {p["sample_id"]: p for p in cases["lsbg-gpt-4o"]["predictions"]}
    assert preds["5"] == {"sample_id": "5", "true": 1, "raw": "**Category 0**", "parsed": 0,
                          "reason": "category 0 mentioned"}
    assert preds["6"]["parsed"] is None and preds["6"]["raw"] == "I cannot tell from this image."
    assert preds["6"]["reason"] == "no class number found"
    assert preds["2"]["raw"] == "The image belongs to category 0." and preds["2"]["parsed"] == 0
    assert cases["lsbg-gpt-4o"]["passed"] is True  # 0.80 >= 0.80
    assert cases["morphology-merged-gpt-4o"]["passed"] is False  # 0.75 < 0.85
    assert cases["morphology-gpt-4o"]["passed"] is False  # 0.583 < 0.62

    # 10 LSBG + 12 morphology requests: the merged case made no calls of its own
    assert len(stub.requests) == 22
    assert stub.max_in_flight > 1

    # failure message names everything a user needs
    assert ("morphology-gpt-4o: task morphology, model gpt-4o, prompt paper: accuracy 0.5833 "
            "(95% CI 0.3195-0.8067), threshold 0.620, n=12, unparseable 1") in text
    # leaderboard: measured rows, then published rows marked as such
    assert "astrobench leaderboard" in text
    assert "published: paper (approximate, ~0.83)" in text
    measured, published = text.split("Published reference rows")
    assert "0.583" in measured.split("astrobench leaderboard")[1]
    assert "0.574" in published and "0.574" not in measured.split("astrobench leaderboard")[1]

    # the key never reaches the output, the results or the saved answers
    assert KEY not in text and KEY not in out.read_text()
    for f in (tmp / "cassettes-from-test-server").rglob("*"):
        if f.is_file():
            assert KEY not in f.read_text()

    # a rerun replays the cassettes (default record mode "none"): no model calls, same numbers
    again = run("--bench-results", str(out), mode="none", extra_env={"ASTROBENCH_E2E_KEY": ""})
    assert again.returncode == 1
    assert len(stub.requests) == 22
    assert json.loads(out.read_text())["cases"][0]["metrics"] == doc["cases"][0]["metrics"]


def test_selection_limit_and_readable_ids(world):
    run, stub, server, tmp = world
    proc = run("--collect-only", "-q")
    assert "test_case[lsbg-gpt-4o]" in proc.stdout and "test_case[morphology-merged-gpt-4o]" in proc.stdout
    proc = run("--bench-task", "lsbg", "--bench-limit", "4", "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # first 4: 4/4 correct >= 0.80
    assert "test_case[lsbg-gpt-4o] PASSED" in proc.stdout
    assert "morphology" not in proc.stdout.split("astrobench leaderboard")[0].split("collected")[1]
    assert len(stub.requests) == 4
    # only the first image file was needed for 4 samples
    assert server.hits.get("X_data_2.npy", 0) == 0
    # the first 3 morphology samples: CORRECT, WRONG (1 -> 2: one class once merged), CORRECT -> 3/3 >= 0.85
    assert expected_accuracy(MORPH_STYLES[:3], MORPH_LABELS[:3], merge=[0, 1, 1, 2]) == 1.0
    out = tmp / "merged.json"
    proc = run("-k", "merged", "--bench-limit", "3", "--bench-results", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\b1 passed, 1 skipped, 4 deselected\b", proc.stdout), proc.stdout  # + smolvlm, offline
    [case] = json.loads(out.read_text())["cases"]
    assert (case["case_id"], case["metrics"]["n"], case["metrics"]["accuracy"], case["passed"]) == \
        ("morphology-merged-gpt-4o", 3, 1.0, True)
    assert len(stub.requests) == 4 + 3  # the merged case asked its source's 3 answers itself


def test_config_mistakes_stop_before_any_model_call(world):
    run, stub, server, tmp = world
    proc = run("--bench-task", "lsbgg")
    assert proc.returncode == 4
    assert "unknown task 'lsbgg'; known tasks: lsbg, morphology, morphology-merged" in proc.stderr
    proc = run("--bench-model", "gpt4o")
    assert ("unknown model 'gpt4o'; known models: gpt-4o, gpt-4o-constrained, gpt-4o-current, gpt-4o-extract, "
            "llava-next, llava-next-parser, llava-onevision, qwen2-vl, qwen2.5-vl, smolvlm") in proc.stderr
    proc = run("--bench-task", "lsbg", extra_env={"ASTROBENCH_E2E_KEY": ""})  # once (make bench): skips
    assert proc.returncode == 0 and "2 skipped" in proc.stdout  # gpt-4o (no key), smolvlm (hub offline)
    assert "set the environment variable ASTROBENCH_E2E_KEY" in proc.stdout
    proc = run("--bench-task", "lsbg", "--bench-model", "gpt-4o", extra_env={"ASTROBENCH_E2E_KEY": ""},
               mode="new_episodes")  # asked to record
    assert proc.returncode == 1 and "set the environment variable ASTROBENCH_E2E_KEY" in proc.stdout
    assert len(stub.requests) == 0


def test_offline_with_nothing_cached_skips_with_instructions(world, tmp_path):
    run, stub, server, tmp = world
    cfg = tmp / "offline.toml"
    # a port nothing listens on: the dataset host is unreachable
    cfg.write_text((tmp / "user.toml").read_text().replace(server.base_url.rstrip("/"), "http://127.0.0.1:9"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "cases", "--bench-config", str(cfg), "-p", "no:cacheprovider",
         "-rs", "--bench-task", "lsbg"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ASTROBENCH_CACHE_DIR": str(tmp_path / "empty-cache"), "PYTHONPATH": str(REPO),
             "ASTROBENCH_E2E_KEY": KEY, "ASTROBENCH_CASSETTE_DIR": str(tmp_path / "r")},
    )
    assert proc.returncode == 0, proc.stdout
    assert "2 skipped" in proc.stdout  # gpt-4o and smolvlm: the data comes first
    assert "y_labels.npy is not cached" in proc.stdout
    assert f"python -m benchmark --bench-config {cfg} fetch lsbg" in proc.stdout  # the user's config, named
    assert len(stub.requests) == 0
