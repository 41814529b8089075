"""Reporting a referee would accept: chance accuracy, balanced accuracy, Cohen's kappa and
accuracy on parsed answers beside accuracy; what each threshold can tell at its n (the
probability that a model as good as the reference fails it; thresholds at or near chance
flagged); a case failed by the regression gate shown as failed; and, with nothing runnable,
the published leaderboard and what each skipped case needs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from benchmark.compare import Baseline
from benchmark.leaderboard import load_published, reference_row, threshold_check
from benchmark.metrics import Scores, fail_probability, score
from benchmark.report import Report
from tests.support.e2e_world import MORPH_LABELS
from tests.support.results import make_result

REPO = Path(__file__).resolve().parents[1]
NEW_FIELDS = ("chance_accuracy", "balanced_accuracy", "kappa", "n_parsed", "parsed_accuracy", "no_class_rate")


# -- 1. the referee's metrics --------------------------------------------------------------
def test_two_class_metrics_by_hand_and_as_sklearn_computes_them():
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

    # 6 of class 0 (5 right), 4 of class 1 (3 right): confusion [[5, 1], [1, 3]]
    y_true = [0] * 6 + [1] * 4
    y_pred = [0, 0, 0, 0, 0, 1] + [1, 1, 1, 0]
    s = score(y_true, y_pred, 2)
    assert s.accuracy == 0.8 and s.chance_accuracy == 0.6               # always "0": 6 of 10
    assert s.balanced_accuracy == pytest.approx((5 / 6 + 3 / 4) / 2)    # 19/24
    # p_o = 0.8; p_e = (6 * 6 + 4 * 4) / 100 = 0.52; kappa = 0.28 / 0.48 = 7/12
    assert s.kappa == pytest.approx(7 / 12)
    assert (s.n_parsed, s.parsed_accuracy, s.no_class_rate) == (10, 0.8, 0.0)
    assert s.balanced_accuracy == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert s.kappa == pytest.approx(cohen_kappa_score(y_true, y_pred))


@pytest.mark.parametrize("seed", range(5))
def test_balanced_accuracy_and_kappa_agree_with_sklearn_without_unparseable(seed):
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

    rng = np.random.default_rng(seed)
    y_true = [int(x) for x in rng.integers(0, 4, 80)]
    y_pred = [t if rng.random() < 0.6 else int(rng.integers(0, 4)) for t in y_true]
    s = score(y_true, y_pred, 4)
    assert s.balanced_accuracy == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert s.kappa == pytest.approx(cohen_kappa_score(y_true, y_pred))
    assert s.chance_accuracy == max(np.bincount(y_true)) / 80


def test_unparseable_and_refused_answers_are_a_wrong_category_of_their_own():
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

    # class 0: 4 right, 1 called 1, 1 unparseable; class 1: 3 right, 1 refused
    y_true = [0] * 6 + [1] * 4
    y_pred = [0, 0, 0, 0, 1, None] + [1, 1, 1, None]
    refused = [False] * 9 + [True]
    s = score(y_true, y_pred, 2, refused=refused)
    assert (s.correct, s.unparseable, s.refused) == (7, 1, 1)
    # p_o = 0.7; predicted: "0" 4, "1" 4, no class 2 (no true label is "no class")
    # p_e = (6 * 4 + 4 * 4) / 100 = 0.4; kappa = 0.3 / 0.6 = 0.5
    assert s.kappa == pytest.approx(0.5)
    assert s.balanced_accuracy == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert (s.n_parsed, s.parsed_accuracy, s.no_class_rate) == (8, 7 / 8, 0.2)
    assert s.chance_accuracy == 0.6
    # the documented equivalence: scikit-learn with "no class" written as a label of its own
    as_label = [-1 if p is None else p for p in y_pred]
    assert s.kappa == pytest.approx(cohen_kappa_score(y_true, as_label))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that -1 is no true class
        assert s.balanced_accuracy == pytest.approx(balanced_accuracy_score(y_true, as_label))


def test_undefined_kappa_and_results_files_written_before_the_new_fields():
    s = score([1, 1, 1], [1, 1, 1], 2)
    assert s.kappa is None and s.balanced_accuracy == 1.0 and s.chance_accuracy == 1.0  # p_e = 1
    none = score([0, 1], [None, None], 2)
    assert none.parsed_accuracy is None and none.no_class_rate == 1.0 and none.n_parsed == 0
    # an old results file has none of the new keys: they are derived from the counts it has
    full = score([0] * 6 + [1] * 4, [0, 0, 0, 0, 1, None, 1, 1, 1, None], 2, refused=[False] * 9 + [True])
    old = {k: v for k, v in full.to_json().items() if k not in NEW_FIELDS}
    assert Scores(**old) == full
    assert all(k in full.to_json() for k in NEW_FIELDS)


def referee_results() -> list:
    lsbg_true = [0] * 236 + [1] * 264  # the paper's LSBG sample: chance 264/500 = 0.528
    llava = make_result("lsbg-llava-next", "lsbg", "llava-next", ["artifact", "LSBG"], lsbg_true,
                        [1 - t if i % 5 == 0 else t for i, t in enumerate(lsbg_true)], threshold=0.53)
    low = make_result("lsbg-mine", "lsbg", "mine", ["artifact", "LSBG"], lsbg_true,
                      [1 - t if i % 4 == 0 else t for i, t in enumerate(lsbg_true)], threshold=0.52)
    merged_true = [0] * 140 + [1] * 219 + [2] * 141
    merged_pred = [t if i % 20 else None for i, t in enumerate(merged_true)]  # 25 unparseable
    merged = make_result("morphology-merged-gpt-4o", "morphology-merged", "gpt-4o",
                         ["smooth round", "cigar or edge-on", "unbarred spiral"], merged_true, merged_pred,
                         threshold=0.85, derived_from="morphology")
    return [llava, low, merged]


def test_terminal_table_detail_markdown_html_and_json_show_the_referee_numbers():
    rep = Report(referee_results())
    text = rep.text()
    measured = text.split("Published reference rows")[0]
    header = measured.splitlines()[1].split()
    assert header[:8] == ["task", "model", "prompt", "n", "accuracy", "95%", "CI", "chance"]
    row = next(line.split() for line in measured.splitlines() if line.startswith("lsbg ") and "llava" in line)
    assert row[4:7] == ["0.800", "0.763-0.833", "0.528"]   # 400 / 500 right; Wilson 95% CI
    detail = rep.detail()
    block = detail.split("lsbg-mine")[0]
    s = rep.results[0].scores
    assert (f"chance 0.528 (always answering the majority class 'LSBG'), balanced accuracy "
            f"{s.balanced_accuracy:.3f}, Cohen's kappa {s.kappa:.3f}") in block
    merged_block = detail.split("morphology-merged-gpt-4o")[1]
    assert "on the 475 answers with a class: accuracy 1.000; 5.0% of answers had no class" in merged_block
    row = dict(zip(rep.headers(), rep.rows()[2]))
    assert (row["accuracy"], row["chance"], row["acc parsed"], row["no class"]) == ("0.950", "0.438", "1.000", "0.050")
    assert row["balanced acc"] == f"{rep.results[2].scores.balanced_accuracy:.3f}"
    md = rep.markdown()
    assert "| chance " in md and "| balanced acc " in md and "| kappa " in md and "| acc parsed " in md
    page = rep.html()
    assert "<th title=\"majority-class share of the sample" in page
    doc = json.loads(json.dumps(rep.document()))
    metrics = doc["cases"][2]["metrics"]
    assert (metrics["chance_accuracy"], metrics["n_parsed"], metrics["no_class_rate"]) == (0.438, 475, 0.05)


# -- 2. thresholds -------------------------------------------------------------------------
def test_fail_probability_is_the_exact_binomial_tail():
    from scipy.stats import binom

    # merged GPT-4o: threshold 0.85 vs the paper's ~0.86 at n = 500 fails about 24% of the time
    assert fail_probability(500, 0.86, 0.85) == pytest.approx(0.2368, abs=5e-5)
    # fails = k / n < threshold, so k <= 424 (425 / 500 = 0.85 passes)
    assert fail_probability(500, 0.86, 0.85) == pytest.approx(binom.cdf(424, 500, 0.86), rel=1e-9)
    for n, p, t in [(500, 0.83, 0.80), (500, 0.67, 0.62), (500, 0.574, 0.53), (500, 0.47, 0.42),
                    (500, 0.542, 0.49), (12, 0.5, 0.62), (10, 0.5, 0.8)]:
        k = next(k for k in range(n + 1) if k / n >= t)
        assert fail_probability(n, p, t) == pytest.approx(binom.cdf(k - 1, n, p), rel=1e-9)
    assert fail_probability(500, 1.0, 0.85) == 0.0 and fail_probability(500, 0.0, 0.85) == 1.0
    assert fail_probability(500, 0.5, 0.0) == 0.0


def test_published_rows_match_config_model_names():
    _, rows = load_published()
    assert reference_row(rows, "morphology-merged", "gpt-4o").accuracy == 0.86
    assert reference_row(rows, "lsbg", "llava-next").accuracy == pytest.approx(0.574)
    assert reference_row(rows, "morphology-merged", "llava-next").accuracy == pytest.approx(0.542)
    assert reference_row(rows, "lsbg", "my-vllm", "gpt-4o").accuracy == 0.83   # by the API model id
    assert reference_row(rows, "lsbg", "mine", "some/model") is None
    assert reference_row(rows, "galaxy10", "gpt-4o") is None


def test_threshold_checks_name_the_reference_and_flag_thresholds_at_or_near_chance():
    rep = Report(referee_results())
    _, rows = rep.published_table()
    llava, low, merged = (threshold_check(r, rows) for r in rep.results)
    assert merged["reference_accuracy"] == 0.86 and merged["reference"].startswith("published: GPT-4o")
    assert merged["fail_probability"] == pytest.approx(0.2368, abs=5e-5) and merged["warning"] is None
    assert llava["reference_accuracy"] == pytest.approx(0.574)
    assert llava["fail_probability"] == pytest.approx(0.0212, abs=5e-5)
    # 0.53 vs chance 0.528: a model no better than chance passes it about half the time
    assert not llava["at_or_below_chance"] and llava["chance_pass_probability"] == pytest.approx(0.4825, abs=1e-3)
    assert llava["warning"].startswith("threshold 0.53 is barely above chance 0.528 for this sample")
    # no published row: the case's own accuracy, and it says so
    assert low["reference"].startswith("measured: this case's own accuracy") and low["reference_accuracy"] == 0.75
    assert low["at_or_below_chance"]
    assert low["warning"] == "threshold 0.52 is at or below chance 0.528 for this sample: the gate proves nothing"

    text = rep.text()
    measured = text.split("Published reference rows")[0]
    lines = measured.rstrip("\n").splitlines()
    assert lines[-2:] == [f"warning: lsbg-llava-next: {llava['warning']}", f"warning: lsbg-mine: {low['warning']}"]
    detail = rep.detail()
    assert ("threshold 0.85: a model exactly as good as the reference (p_ref 0.860, published: GPT-4o, paper "
            "(approximate, ~0.86)) fails it with probability 0.237 at n=500") in detail
    assert ("threshold 0.52: a model exactly as good as the reference (p_ref 0.750, measured: this case's own "
            "accuracy (no published row for lsbg x mine)) fails it with probability") in detail
    assert f"WARNING: {low['warning']}" in detail
    doc = json.loads(json.dumps(rep.document()))
    checks = [c["summary"]["threshold_check"] for c in doc["cases"]]
    assert checks[1]["warning"] == low["warning"] and checks[2]["fail_probability"] == pytest.approx(0.2368, abs=5e-5)
    assert f"- warning: lsbg-mine: {low['warning']}" in rep.markdown()
    no_threshold = make_result("x", "lsbg", "gpt-4o", ["a", "b"], [0, 1], [0, 1])
    assert Report([no_threshold]).summary(no_threshold)["threshold_check"] is None


# -- 3. the regression gate fails the case in the leaderboard and the JSON ------------------
def test_gated_regression_is_a_failed_case_in_the_report(tmp_path):
    now = make_result("lsbg-gpt-4o", "lsbg", "gpt-4o", ["artifact", "LSBG"], [0, 1] * 10, [0, 1] * 5 + [1, 0] * 5)
    base = tmp_path / "base.json"
    doc = json.loads(json.dumps(Report([now]).document()))  # a copy: the document shares the predictions
    for p in doc["cases"][0]["predictions"]:
        p["parsed"] = p["true"]   # all 20 right before: b = 10, c = 0, p = 0.002
    base.write_text(json.dumps(doc))
    gated = Report.build([now], baseline=Baseline.load(base), fail_on_regression=True)
    assert gated.rows()[0][gated.headers().index("result")] == "FAIL (regression)"
    assert "FAIL (regression)" in gated.text()
    case = gated.document()["cases"][0]
    assert (case["passed"], case["regression"]) == (False, True)
    assert "FAILED by the regression gate: lsbg-gpt-4o: accuracy regression" in gated.detail()
    # without the gate the drop is reported, and the case is not failed
    shown = Report.build([now], baseline=Baseline.load(base))
    assert shown.rows()[0][shown.headers().index("result")] == "-"
    case = shown.document()["cases"][0]
    assert (case["passed"], case["regression"]) == (None, True)


def test_plugin_run_failed_by_the_gate_shows_fail_regression(world):
    run, _stub, _server, tmp = world
    cfg = tmp / "user.toml"
    cfg.write_text(cfg.read_text() + '\n[thresholds]\n"morphology/gpt-4o" = 0.5\n')  # only the gate fails it
    base = tmp / "baseline.json"
    base.write_text(json.dumps({"schema": "astrobench-results/1", "cases": [{
        "case_id": "morphology-gpt-4o",
        "predictions": [{"sample_id": str(i), "true": t, "raw": f"Category {t}", "parsed": t}
                        for i, t in enumerate(MORPH_LABELS)]}]}))
    out = tmp / "results.json"
    proc = run("--bench-task", "morphology", "--bench-task", "lsbg", "--bench-baseline", str(base),
               "--bench-fail-on-regression", "--bench-alpha", "0.1", "--bench-results", str(out))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    board = text.split("astrobench leaderboard")[1].split("Published reference rows")[0]
    [row] = [line for line in board.splitlines() if line.startswith("morphology ")]
    assert re.search(r"0\.50\s+FAIL \(regression\)$", row.rstrip()), board
    [row] = [line for line in board.splitlines() if line.startswith("lsbg ")]
    assert re.search(r"0\.80\s+pass$", row)
    cases = {c["case_id"]: c for c in json.loads(out.read_text())["cases"]}
    assert (cases["morphology-gpt-4o"]["passed"], cases["morphology-gpt-4o"]["regression"]) == (False, True)
    assert (cases["lsbg-gpt-4o"]["passed"], cases["lsbg-gpt-4o"]["regression"]) == (True, False)


# -- 4. nothing runnable: the published leaderboard and what each case needs ----------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_runnable_still_prints_the_published_leaderboard_and_what_is_missing(tmp_path):
    port = _closed_port()  # nothing listens there: every download is refused at once, as offline
    names = {"lsbg": ["X_data_1.npy", "X_data_2.npy", "X_data_3.npy", "X_data_4.npy", "X_data_5.npy",
                      "y_labels.npy"], "galaxy-mnist": ["train_dataset.hdf5.gz"]}
    cfg = tmp_path / "offline.toml"
    cfg.write_text("".join(f'[datasets.{ds}.files."{f}"]\nurl = "http://127.0.0.1:{port}/{f}"\n'
                           for ds, files in names.items() for f in files))
    for d in ("cache", "cassettes", "frozen"):
        (tmp_path / d).mkdir()
    env = {**os.environ, "ASTROBENCH_CACHE_DIR": str(tmp_path / "cache"),
           "ASTROBENCH_CASSETTE_DIR": str(tmp_path / "cassettes"),
           "ASTROBENCH_FIXTURES_DIR": str(tmp_path / "frozen"), "PYTHONPATH": str(REPO)}
    for k in ("ASTROBENCH_CONFIG", "OPENAI_API_KEY"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "cases", "-p", "no:cacheprovider",
                           "--bench-config", str(cfg)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert re.search(r"\b6 skipped\b", text), text  # gpt-4o and the default open model (smolvlm), 3 tasks each
    board = text.split("astrobench leaderboard")[1]
    assert "Published reference rows (not measured here): Tanoglidis & Jain (2024), RNAAS" in board
    published = [line.split() for line in board.splitlines() if "published:" in line]
    assert [(r[0], r[1]) for r in published[:3]] == [("lsbg", "GPT-4o"), ("morphology", "GPT-4o"),
                                                    ("morphology-merged", "GPT-4o")]
    assert any(r[0] == "lsbg" and "0.574" in r for r in published)
    skipped = board.split("Skipped cases (not measured): what is missing and the command that gets it\n")[1]
    lines = skipped.splitlines()[:6]
    cases = [f"{t}-{m}" for m in ("gpt-4o", "smolvlm") for t in ("lsbg", "morphology", "morphology-merged")]
    for line, case, ds in zip(lines, cases, ["lsbg", "galaxy-mnist", "galaxy-mnist"] * 2, strict=True):
        assert line.startswith(f"  {case}: dataset {ds}: "), line
        assert f"is not cached at {tmp_path / 'cache' / ds}" in line
        assert f"Run `python -m benchmark --bench-config {cfg} fetch {ds}`" in line
