"""The ``astrobench`` command: help texts and ``report``, which merges results files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmark.compare import Baseline
from benchmark.leaderboard import load_published, results_document
from benchmark.metrics import score
from benchmark.session import CaseResult

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "astrobench"
CITATION = load_published()[0]
LSBG = ["artifact", "lsbg"]
MORPH = ["smooth round", "smooth cigar", "edge-on disk", "unbarred spiral"]


def _case(task: str, model: str, pairs: list[tuple[int, int | None]], *, classes: list[str] = LSBG,
          prompt: str = "paper", sample: str = "a" * 64, prompt_sha: str = "b" * 64) -> CaseResult:
    preds = [{"sample_id": i, "true": t, "raw": f"Category {p}", "parsed": p} for i, (t, p) in enumerate(pairs)]
    return CaseResult(case_id=f"{task}-{model}", task=task, model=model, model_id=f"{model}-2024", prompt=prompt,
                      classes=classes, scores=score([t for t, _ in pairs], [p for _, p in pairs], len(classes)),
                      threshold=0.5, threshold_note="", predictions=preds, wall_s=2.0,
                      prompt_sha256=prompt_sha, sample_sha256=sample)


def _write(path: Path, results: list[CaseResult], created: str, *, drop: tuple[str, ...] = (),
           provenance: dict[str, Any] | None = None) -> Path:
    doc: dict[str, Any] = results_document(results)
    doc["created"] = created
    if provenance is not None:
        doc["provenance"] = provenance
    for c in doc["cases"]:  # an older file, written before a field existed
        for key in drop:
            del c[key]
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _run(*args: Any, script: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [str(SCRIPT)] if script else [sys.executable, "-m", "benchmark"]
    return subprocess.run([*cmd, *map(str, args)], check=False, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "100"})  # argparse wraps help to this width


LSBG_PAIRS = [(0, 0), (1, 1), (1, 0), (0, None)]          # accuracy 0.5
LSBG_BETTER = [(0, 0), (1, 1), (1, 1), (0, 0)]            # accuracy 1.0
MORPH_PAIRS = [(0, 0), (1, 2), (2, 2), (3, 3), (3, 0)]     # accuracy 0.6


def test_help_lists_commands_with_examples() -> None:
    if not SCRIPT.exists():
        pytest.skip(f"console script not installed at {SCRIPT}; run: pip install -e .")
    top = _run("--help", script=True)
    assert top.returncode == 0, top.stderr
    assert top.stdout.startswith("usage: astrobench")
    for command in ("fetch", "freeze", "report"):
        assert f"    {command} " in top.stdout
    assert "examples:" in top.stdout and "astrobench report results/*.json --md board.md" in top.stdout
    for command in ("fetch", "freeze", "report"):
        sub = _run(command, "--help", script=True)
        assert sub.returncode == 0, sub.stderr
        assert sub.stdout.startswith(f"usage: astrobench {command}") and "examples:" in sub.stdout
    report = " ".join(_run("report", "--help").stdout.split())
    assert report.startswith("usage: python -m benchmark report")
    assert "--keep {newest}" in report and "(default: fail with exit code 2)" in report
    assert "--md PATH" in report and "(default: none)" in report


def test_report_merges_files_keeps_identical_once_with_provenance(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", [_case("lsbg", "gpt-4o", LSBG_PAIRS)], "2024-05-01T10:00:00+00:00")
    b = _write(tmp_path / "b.json", [_case("morphology", "gpt-4o", MORPH_PAIRS, classes=MORPH),
                                     _case("lsbg", "gpt-4o", LSBG_PAIRS)], "2024-05-02T10:00:00+00:00")
    out = tmp_path / "out"
    proc = _run("report", a, b, "--json", out / "merged.json", "--md", out / "board.md",
                "--html", out / "site" / "index.html")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    measured = [line.split() for line in lines if line.startswith(("lsbg ", "morphology "))][:2]
    assert [r[:5] for r in measured] == [["lsbg", "gpt-4o", "paper", "4", "0.500"],
                                          ["morphology", "gpt-4o", "paper", "5", "0.600"]]
    assert f"Published reference rows (not measured here): {CITATION}" in proc.stdout
    assert f"  {a} (created 2024-05-01T10:00:00+00:00): lsbg-gpt-4o" in lines
    assert f"  {b} (created 2024-05-02T10:00:00+00:00): morphology-gpt-4o" in lines

    doc = json.loads((out / "merged.json").read_text())
    assert doc["schema"] == "astrobench-results/1"
    cases = {c["case_id"]: c for c in doc["cases"]}
    assert sorted(cases) == ["lsbg-gpt-4o", "morphology-gpt-4o"]
    assert (cases["lsbg-gpt-4o"]["source_file"], cases["lsbg-gpt-4o"]["source_created"]) == \
        (str(a), "2024-05-01T10:00:00+00:00")
    assert cases["lsbg-gpt-4o"]["duplicates"] == [
        {"source_file": str(b), "source_created": "2024-05-02T10:00:00+00:00", "status": "identical"}]
    assert cases["morphology-gpt-4o"]["source_file"] == str(b) and "duplicates" not in cases["morphology-gpt-4o"]
    assert cases["lsbg-gpt-4o"]["metrics"]["accuracy"] == 0.5
    assert cases["morphology-gpt-4o"]["metrics"]["accuracy"] == pytest.approx(0.6)
    assert cases["morphology-gpt-4o"]["sample_sha256"] == "a" * 64
    assert doc["merged_from"] == [
        {"path": str(a), "created": "2024-05-01T10:00:00+00:00", "cases": ["lsbg-gpt-4o"]},
        {"path": str(b), "created": "2024-05-02T10:00:00+00:00", "cases": ["morphology-gpt-4o"]}]
    assert {r["task"] for r in doc["published"]["rows"]} >= {"lsbg", "morphology"}
    assert Baseline.load(out / "merged.json").cases.keys() == cases.keys()  # usable as a --baseline

    md = (out / "board.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    assert [r[:5] for r in rows if r[1] == "gpt-4o"] == [["lsbg", "gpt-4o", "paper", "4", "0.500"],
                                                         ["morphology", "gpt-4o", "paper", "5", "0.600"]]
    assert f"Source: {CITATION}" in md and md.count("## Published reference") == 1
    assert f"- `{a}` (created 2024-05-01T10:00:00+00:00): `lsbg-gpt-4o`" in md
    page = (out / "site" / "index.html").read_text()
    assert 'id="case-lsbg-gpt-4o"' in page and 'id="case-morphology-gpt-4o"' in page
    assert "Tanoglidis &amp; Jain (2024)" in page and f"<code>{b}</code>" in page


def test_older_file_without_digests_merges_when_predictions_agree(tmp_path: Path) -> None:
    old = _write(tmp_path / "old.json", [_case("lsbg", "gpt-4o", LSBG_PAIRS)], "2024-01-01T00:00:00",
                 drop=("prompt_sha256", "sample_sha256"))
    new = _write(tmp_path / "new.json", [_case("lsbg", "gpt-4o", LSBG_PAIRS)], "2024-06-01T00:00:00+00:00")
    proc = _run("report", old, new, "--json", tmp_path / "m.json")
    assert proc.returncode == 0, proc.stderr
    [case] = json.loads((tmp_path / "m.json").read_text())["cases"]
    assert case["source_file"] == str(old) and case["duplicates"][0]["status"] == "identical"

    differ = _write(tmp_path / "differ.json", [_case("lsbg", "gpt-4o", LSBG_BETTER)], "2024-07-01T00:00:00Z",
                    drop=("prompt_sha256", "sample_sha256"))
    proc = _run("report", new, differ)
    assert proc.returncode == 2
    assert "sample_sha256 recorded in only one file" in proc.stderr
    assert "predictions differ on 2 of 4 samples" in proc.stderr


def test_incompatible_duplicate_is_refused_naming_both_files(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", [_case("lsbg", "gpt-4o", LSBG_PAIRS)], "2024-05-01T10:00:00+00:00")
    b = _write(tmp_path / "b.json", [_case("lsbg", "gpt-4o", LSBG_PAIRS, sample="c" * 64)],
               "2024-05-02T10:00:00+00:00")
    proc = _run("report", a, b, "--json", tmp_path / "m.json", "--md", tmp_path / "m.md")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: case lsbg-gpt-4o (task lsbg, model gpt-4o, prompt paper)")
    assert f"is in {a} and {b}" in proc.stderr
    assert "sample_sha256 aaaaaaaaaaaa... vs cccccccccccc..." in proc.stderr
    assert "--keep newest" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "m.json").exists() and not (tmp_path / "m.md").exists()

    c = _write(tmp_path / "c.json", [_case("lsbg", "gpt-4o", LSBG_PAIRS, prompt_sha="d" * 64)],
               "2024-05-03T10:00:00+00:00")
    proc = _run("report", a, c)
    assert proc.returncode == 2 and "prompt_sha256 bbbbbbbbbbbb... vs dddddddddddd..." in proc.stderr


def test_keep_newest_takes_the_newer_run_with_a_note(tmp_path: Path) -> None:
    older = _write(tmp_path / "older.json", [_case("lsbg", "gpt-4o", LSBG_PAIRS)], "2024-05-01T10:00:00+00:00")
    newer = _write(tmp_path / "newer.json", [_case("lsbg", "gpt-4o", LSBG_BETTER, sample="c" * 64)],
                   "2024-05-01T13:00:00+02:00")  # 11:00 UTC: compared as instants, not as strings
    for order in ((newer, older), (older, newer)):
        proc = _run("report", *order, "--keep", "newest", "--json", tmp_path / "m.json")
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.startswith("note: case lsbg-gpt-4o (task lsbg, model gpt-4o, prompt paper) differs")
        assert f"kept {newer} (newest, created 2024-05-01T13:00:00+02:00), dropped {older}" in proc.stderr
        [case] = json.loads((tmp_path / "m.json").read_text())["cases"]
        assert case["source_file"] == str(newer) and case["metrics"]["accuracy"] == 1.0
        assert case["duplicates"][0]["source_file"] == str(older)
        assert case["duplicates"][0]["status"] == "superseded"
        assert proc.stdout.splitlines()[3].split()[:5] == ["lsbg", "gpt-4o", "paper", "4", "1.000"]


@pytest.mark.parametrize("content, expected", [
    ("{not json", "expected a results JSON, found unreadable or invalid JSON"),
    ('{"schema": "pytest-benchmark/4"}', "expected schema 'astrobench-results/1', found 'pytest-benchmark/4'"),
    ('{"schema": "astrobench-results/1", "cases": [{"case_id": "x"}]}', "cases[0]: expected a case result"),
])
def test_bad_results_file_exits_2_naming_it(tmp_path: Path, content: str, expected: str) -> None:
    good = _write(tmp_path / "good.json", [_case("lsbg", "gpt-4o", LSBG_PAIRS)], "2024-05-01T10:00:00+00:00")
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    proc = _run("report", good, bad)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {bad}: {expected}")
    proc = _run("report", tmp_path / "missing.json")
    assert proc.returncode == 2 and f"{tmp_path / 'missing.json'}: file not found" in proc.stderr


def test_keep_newest_tie_goes_to_the_later_file_and_undated_files_are_refused(tmp_path: Path) -> None:
    """In-process: the merge rules without a subprocess."""
    from benchmark.core import BenchError
    from benchmark.merge import load_results, merge

    when = "2024-05-01T10:00:00+00:00"
    a = load_results(_write(tmp_path / "a.json", [_case("lsbg", "gpt-4o", LSBG_PAIRS)], when))
    b = load_results(_write(tmp_path / "b.json", [_case("lsbg", "gpt-4o", LSBG_BETTER)], when))
    [kept], [note] = merge([a, b], keep="newest")
    assert kept.source is b and f"kept {b.path}" in note
    [kept], _ = merge([b, a], keep="newest")
    assert kept.source is a
    undated = load_results(_write(tmp_path / "u.json", [_case("lsbg", "gpt-4o", LSBG_BETTER)], "yesterday"))
    with pytest.raises(BenchError, match=f"found none readable in {undated.path}"):
        merge([a, undated], keep="newest")
    with pytest.raises(BenchError, match="predictions differ on 2 of 4 samples"):
        merge([a, undated])


def _prov(cases: dict[str, Any], *, temperature: float, prompts: dict[str, str], path: str) -> dict[str, Any]:
    """A small provenance as benchmark.provenance.collect writes it."""
    return {"schema": "astrobench-provenance/1", "python": "3.11", "record_mode": "none",
            "models": {"gpt-4o": {"provider": "openai", "model": "gpt-4o-2024", "quantization": None,
                                  "revision": None, "settings": {"temperature": temperature}}},
            "prompts": {name: {"path": f"{path}/{name}.txt", "sha256": sha, "text_sha256": sha,
                               "variant": {"file": "paper"}} for name, sha in prompts.items()},
            "datasets": {}, "cases": cases}


def test_a_merged_file_keeps_each_runs_provenance_and_a_baseline_compares_with_it(tmp_path: Path) -> None:
    from benchmark.provenance import differences

    a = _write(tmp_path / "a.json", [_case("lsbg", "gpt-4o", LSBG_PAIRS)], "2024-05-01T10:00:00+00:00",
               provenance=_prov({"lsbg-gpt-4o": {"model_id": "gpt-4o-2024"}}, temperature=0.0,
                                prompts={"lsbg/paper": "1" * 64}, path="/home/a"))
    b = _write(tmp_path / "b.json", [_case("morphology", "gpt-4o", MORPH_PAIRS, classes=MORPH)],
               "2024-05-02T10:00:00+00:00",
               provenance=_prov({"morphology-gpt-4o": {"model_id": "gpt-4o-2024"}}, temperature=0.7,
                                prompts={"lsbg/paper": "1" * 64, "morphology/paper": "2" * 64}, path="/ci/b"))
    proc = _run("report", a, b, "--json", tmp_path / "merged.json")
    assert proc.returncode == 0, proc.stderr
    merged = json.loads((tmp_path / "merged.json").read_text())["provenance"]
    assert merged["cases"] == {"lsbg-gpt-4o": {"model_id": "gpt-4o-2024"},
                               "morphology-gpt-4o": {"model_id": "gpt-4o-2024"}}
    # the same prompt file at two paths is one prompt; the runs disagree on gpt-4o's settings
    assert sorted(merged["prompts"]) == ["lsbg/paper", "morphology/paper"]
    assert merged["models"] == {} and merged["disagree"] == ["models.gpt-4o"]
    assert merged["runs"][str(a)]["python"] == "3.11" and merged["runs"][str(b)]["record_mode"] == "none"
    assert Baseline.load(tmp_path / "merged.json").provenance == merged
    new = _prov({"lsbg-gpt-4o": {"model_id": "gpt-4o-2024"}}, temperature=0.0,
                prompts={"lsbg/paper": "3" * 64}, path="/home/c")
    found = differences(merged, new)
    assert "prompt lsbg/paper: sha256 of the text sent: 111111111111 -> 333333333333" in found
    assert ("model gpt-4o: the merged runs disagree on it (settings, id or weights), so it is not "
            "compared") in found
    # a file without provenance: the merged file cannot vouch for its cases, and says none
    c = _write(tmp_path / "c.json", [_case("lsbg", "gpt-4o", LSBG_BETTER, prompt="terse")],
               "2024-05-03T10:00:00+00:00")
    proc = _run("report", a, c, "--json", tmp_path / "merged2.json")
    assert proc.returncode == 0, proc.stderr
    assert "provenance" not in json.loads((tmp_path / "merged2.json").read_text())


def test_a_case_the_regression_gate_failed_stays_failed_in_the_merged_leaderboard(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", [_case("lsbg", "gpt-4o", LSBG_BETTER)], "2024-05-01T10:00:00+00:00")
    doc = json.loads(a.read_text())  # as --bench-baseline with --bench-fail-on-regression writes it
    doc["cases"][0].update(regression=True, passed=False)
    doc["baseline"] = {"path": "old.json", "fail_on_regression": True, "comparisons": [], "differences": []}
    a.write_text(json.dumps(doc))
    b = _write(tmp_path / "b.json", [_case("morphology", "gpt-4o", MORPH_PAIRS, classes=MORPH)],
               "2024-05-02T10:00:00+00:00")
    proc = _run("report", a, b, "--json", tmp_path / "merged.json")
    assert proc.returncode == 0, proc.stderr
    rows: dict[str, str] = {}
    for line in proc.stdout.splitlines():  # the measured rows come before the published ones
        if line.startswith(("lsbg ", "morphology ")):
            rows.setdefault(line.split()[0], line)
    assert "FAIL (regression)" in rows["lsbg"] and "pass" in rows["morphology"]
    cases = {c["case_id"]: c for c in json.loads((tmp_path / "merged.json").read_text())["cases"]}
    assert (cases["lsbg-gpt-4o"]["passed"], cases["lsbg-gpt-4o"]["regression"]) == (False, True)
    assert "regression" not in cases["morphology-gpt-4o"]
