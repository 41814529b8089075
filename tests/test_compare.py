"""The regression gate: exact McNemar p-values from hand-computed cases,
pairing on shared sample ids only, the regression decision, baseline errors."""

from __future__ import annotations

import json
from math import comb

import pytest

from benchmark.compare import Baseline, compare_predictions, mcnemar_exact, render_comparison
from benchmark.core import BenchError


@pytest.mark.parametrize(("b", "c", "p"), [
    (0, 6, 2 / 64),                        # 2 * P(X <= 0), X ~ Bin(6, 1/2)
    (6, 0, 2 / 64),                        # symmetric
    (1, 9, 2 * (1 + 10) / 1024),           # 0.021484375
    (0, 5, 2 / 32),                        # 0.0625: not significant at 0.05
    (2, 8, 2 * (1 + 10 + 45) / 1024),      # 0.109375
    (5, 5, 1.0),                           # b = c
    (3, 4, 1.0),                           # 2 * P(X <= 3) > 1 -> capped
    (0, 0, 1.0),                           # no discordant pairs
])
def test_mcnemar_exact_known_values(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=1e-15)


def test_mcnemar_exact_matches_the_binomial_tail_and_scipy():
    from scipy.stats import binomtest

    assert mcnemar_exact(1, 9) == 0.021484375
    for b in range(0, 13):
        for c in range(0, 13):
            if b + c:
                n, k = b + c, min(b, c)
                tail = sum(comb(n, i) for i in range(k + 1)) / 2 ** n
                assert mcnemar_exact(b, c) == pytest.approx(min(1.0, 2 * tail))
                assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, n, 0.5).pvalue)
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_exact(-1, 2)


def preds(ids, correct, true=1):
    """Per-sample prediction dicts; ``correct`` per id (None = unparseable)."""
    out = []
    for i, ok in zip(ids, correct):
        parsed = None if ok is None else (true if ok else 1 - true)
        out.append({"sample_id": str(i), "true": true, "raw": "x", "parsed": parsed})
    return out


def test_pairs_only_on_shared_ids():
    # baseline ids 0..9, new ids 4..13; shared 4..9 (n=6)
    base = preds(range(10), [False] * 4 + [True] * 6)          # all shared right
    new = preds(range(4, 14), [False] * 6 + [True] * 4)        # all shared wrong; extras right
    cmp = compare_predictions("t-m", new, base)
    assert (cmp.status, cmp.n_shared, cmp.b, cmp.c) == ("compared", 6, 6, 0)
    assert (cmp.baseline_accuracy, cmp.accuracy, cmp.delta) == (1.0, 0.0, -1.0)
    assert cmp.p_value == 2 / 64 and cmp.regression and cmp.verdict == "REGRESSION"
    # the unshared ids (0..3 wrong before, 10..13 right now) did not count
    msg = cmp.describe()
    for part in ("Δaccuracy -1.0000", "n=6 shared", "p=0.03125", "b=6", "c=0"):
        assert part in msg


def test_unparseable_counts_as_wrong_and_regression_needs_drop_and_significance():
    base = preds(range(10), [True] * 10)
    new = preds(range(10), [None] * 6 + [True] * 4)
    cmp = compare_predictions("t-m", new, base)
    assert (cmp.b, cmp.c, cmp.p_value) == (6, 0, 0.03125) and cmp.regression
    assert not compare_predictions("t-m", new, base, alpha=0.01).regression   # p >= alpha
    # an improvement of the same size is not a regression
    up = compare_predictions("t-m", base, new)
    assert (up.b, up.c, up.delta) == (0, 6, 0.6) and not up.regression and up.verdict == "improved"
    # b=0, c=5 reversed: a drop of 0.5 with p=0.0625 is not significant at 0.05, is at 0.1
    drop = compare_predictions("t-m", preds(range(10), [False] * 5 + [True] * 5), base)
    assert drop.p_value == 0.0625 and not drop.regression
    assert compare_predictions("t-m", preds(range(10), [False] * 5 + [True] * 5), base, alpha=0.1).regression
    # 1 vs 9: 2*(1+10)/1024
    mixed = compare_predictions("t-m", preds(range(10), [True] + [False] * 9),
                                preds(range(10), [False] + [True] * 9))
    assert (mixed.b, mixed.c, mixed.p_value) == (9, 1, 0.021484375) and mixed.regression


def write_doc(path, cases, schema="astrobench-results/1"):
    path.write_text(json.dumps({"schema": schema, "cases": cases}))
    return path


def test_baseline_load_compare_new_and_errors(tmp_path):
    good = write_doc(tmp_path / "base.json", [{"case_id": "a-m", "predictions": preds(range(4), [True] * 4)}])
    baseline = Baseline.load(good)

    class R:
        case_id, predictions = "a-m", preds(range(2, 6), [True, False, True, True])

    cmp = baseline.compare(R())
    assert (cmp.n_shared, cmp.b, cmp.c) == (2, 1, 0) and cmp.p_value == 1.0 and not cmp.regression
    R.case_id = "b-m"
    assert baseline.compare(R()).status == "new" and not baseline.compare(R()).regression
    assert "new" in render_comparison([baseline.compare(R())], good)

    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(BenchError, match=r"--bench-baseline .*bad\.json: expected a results JSON"):
        Baseline.load(bad_json)
    with pytest.raises(BenchError, match=r"wrong\.json: expected schema 'astrobench-results/1', found 'other/2'"):
        Baseline.load(write_doc(tmp_path / "wrong.json", [], schema="other/2"))
    with pytest.raises(BenchError, match=r"cases\[0\]: expected 'case_id' and 'predictions'"):
        Baseline.load(write_doc(tmp_path / "nopred.json", [{"case_id": "a-m"}]))
    with pytest.raises(BenchError, match="missing.json: file not found"):
        Baseline.load(tmp_path / "missing.json")
