"""End to end, against the loopback stand-ins of tests/support/e2e_world.py (the world fixture):
the regression gate failing a real `pytest cases` run, and a `-n 2`
pytest-xdist run that merges worker results into one leaderboard and one
JSON without asking the model twice."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.e2e_world import LSBG_STYLES, MORPH_LABELS, MORPH_STYLES, expected_accuracy


def baseline_doc(case_id: str, labels: list[int]) -> dict:
    """A results JSON in which every sample of ``case_id`` was right."""
    return {"schema": "astrobench-results/1", "cases": [{
        "case_id": case_id,
        "predictions": [{"sample_id": str(i), "true": t, "raw": f"Category {t}", "parsed": t}
                        for i, t in enumerate(labels)]}]}


def test_fail_on_regression_fails_the_case_with_the_numbers(world):
    run, stub, server, tmp = world
    cfg = tmp / "user.toml"
    # lower morphology's threshold so only the gate can fail it
    cfg.write_text(cfg.read_text() + '\n[thresholds]\n"morphology/gpt-4o" = 0.5\n')
    base = tmp / "baseline.json"
    base.write_text(json.dumps(baseline_doc("morphology-gpt-4o", MORPH_LABELS)))
    # now: 7 of 12 right (wrong: ids 1, 3, 5, 6 unparseable, 10) -> b = 5, c = 0,
    # p = 2 / 2**5 = 0.0625: significant at alpha 0.1, not at the default 0.05
    proc = run("--bench-task", "morphology", "--bench-task", "lsbg", "--bench-model", "gpt-4o", "--bench-baseline",
               str(base), "--bench-fail-on-regression", "--bench-alpha", "0.1", "-v")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "FAILED cases/test_cases.py::test_case[morphology-gpt-4o]" in text
    assert "test_case[lsbg-gpt-4o] PASSED" in text          # not in the baseline: "new", no gate
    assert ("morphology-gpt-4o: accuracy regression against the baseline: Δaccuracy -0.4167 "
            "(1.0000 -> 0.5833) on n=12 shared samples, exact McNemar p=0.0625 < alpha 0.1 "
            "(b=5 right before and wrong now, c=0 wrong before and right now)") in text
    table = text.split("Against baseline")[1]
    assert re.search(r"morphology-gpt-4o\s+12\s+1\.000\s+0\.583\s+-0\.417\s+5\s+0\s+0\.0625\s+REGRESSION", table)
    assert re.search(r"lsbg-gpt-4o(\s+-){7}\s+new", table)
    assert len(stub.requests) == 22

    # default alpha 0.05: the same drop is reported, not failed (replayed, no model calls)
    again = run("--bench-task", "morphology", "--bench-model", "gpt-4o", "--bench-baseline", str(base),
                "--bench-fail-on-regression", mode="none")
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"morphology-gpt-4o\s+12\s+1\.000\s+0\.583\s+-0\.417\s+5\s+0\s+0\.0625\s+no significant change",
                     again.stdout)
    assert len(stub.requests) == 22

    # a baseline that is not a results JSON is a usage error naming the file
    bad = tmp / "not-results.json"
    bad.write_text(json.dumps({"cases": []}))
    proc = run("--bench-task", "morphology", "--bench-baseline", str(bad), mode="none")
    assert proc.returncode == 4
    assert f"--bench-baseline {bad}: expected schema 'astrobench-results/1', found None" in proc.stderr
    proc = run("--bench-task", "morphology", "--bench-fail-on-regression", mode="none")
    assert proc.returncode == 4 and "--bench-fail-on-regression expects --bench-baseline PATH" in proc.stderr


def test_xdist_workers_merge_into_one_leaderboard_and_one_json(world):
    pytest.importorskip("xdist")
    run, stub, server, tmp = world
    out, md, page = tmp / "results.json", tmp / "board.md", tmp / "board.html"
    proc = run("-n", "2", "--bench-model", "gpt-4o", "--bench-results", str(out), "--bench-md", str(md),
               "--bench-html", str(page), "--bench-detail", "-v")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text      # morphology misses its threshold, as in the serial run
    assert "2 workers" in text
    # cases sharing model calls ran on one worker (benchmark.scheduling)
    assert "scheduling tests via CaseGroupScheduling" in text
    worker = {case: gw for gw, case in re.findall(
        r"\[(gw\d)\] \[\s*\d+%\] \w+ cases/test_cases.py::test_case\[([\w-]+)\]", text)}
    assert len(worker) == 3 and worker["morphology-gpt-4o"] == worker["morphology-merged-gpt-4o"], text
    assert text.count("astrobench leaderboard") == 1 and text.count("astrobench detail") == 1
    doc = json.loads(out.read_text())
    acc = {c["case_id"]: c["metrics"]["accuracy"] for c in doc["cases"]}
    assert list(acc) == ["lsbg-gpt-4o", "morphology-gpt-4o", "morphology-merged-gpt-4o"]   # plan order
    assert acc == pytest.approx({
        "lsbg-gpt-4o": expected_accuracy(LSBG_STYLES[:10], [i % 2 for i in range(10)]),
        "morphology-gpt-4o": expected_accuracy(MORPH_STYLES, MORPH_LABELS),
        "morphology-merged-gpt-4o": expected_accuracy(MORPH_STYLES, MORPH_LABELS, merge=[0, 1, 1, 2])})
    # the merged case shared the morphology answers on one worker: 10 + 12 calls, none twice
    assert len(stub.requests) == 22
    summary = {c["case_id"]: c["summary"] for c in doc["cases"]}
    assert summary["morphology-gpt-4o"]["merged_accuracy"] == [{"task": "morphology-merged", "accuracy": 0.75}]
    assert summary["lsbg-gpt-4o"]["cost_usd"] is not None and summary["lsbg-gpt-4o"]["cached"] == 0
    # the merged case reused the live answers in memory, not a replay of another worker's cassette
    assert summary["morphology-merged-gpt-4o"]["cached"] == 0
    # one Markdown and one HTML file with all three cases
    assert md.read_text().count("| gpt-4o ") == 3
    assert page.read_text().count('src="data:image/png;base64,') == 3
    # the detail view: per-class table and row-normalised confusion
    assert "merged classes (morphology-merged): accuracy 0.750" in text
    assert "confusion matrix: counts, then row-normalised" in text


def test_a_baseline_from_a_different_setup_is_named_with_its_differences(world):
    """Results carry provenance; --bench-baseline says what differs (here: the model's settings)."""
    run, stub, server, tmp = world
    first = tmp / "first.json"
    assert run("--bench-task", "lsbg", "--bench-model", "gpt-4o", "--bench-results", str(first)).returncode == 0
    doc = json.loads(first.read_text())
    assert doc["provenance"]["record_mode"] == "once" and "lsbg-gpt-4o" in doc["provenance"]["cases"]
    cfg = tmp / "user.toml"
    cfg.write_text(cfg.read_text().replace("concurrency = 4\n", "concurrency = 4\nmax_tokens = 30\n"))
    second = run("--bench-task", "lsbg", "--bench-model", "gpt-4o", "--bench-baseline", str(first),
                 "--bench-results", str(tmp / "second.json"), mode="new_episodes")
    text = second.stdout + second.stderr
    assert second.returncode == 0, text
    assert f"astrobench: baseline {first} differs from this run in:" in text
    assert "max_tokens" in text.split("differs from this run in:")[1], text
    assert json.loads((tmp / "second.json").read_text())["baseline"]["differences"]
