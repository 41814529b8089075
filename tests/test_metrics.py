"""Metrics, checked against numbers the paper's authors printed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.leaderboard import load_published
from benchmark.metrics import merge_predictions, predictions_from_confusion, score, wilson_interval

LSBG_CM = [[138, 98], [115, 149]]
MORPH_CM = [[136, 2, 0, 2], [17, 57, 5, 40], [10, 31, 7, 52], [104, 2, 0, 35]]


def test_llava_lsbg_numbers_from_confusion_matrix():
    y_true, y_pred = predictions_from_confusion(LSBG_CM)
    s = score(y_true, y_pred, 2)
    assert s.n == 500 and s.support == [236, 264]
    assert s.accuracy == pytest.approx(0.574)
    assert round(s.precision[1], 4) == 0.6032
    assert round(s.recall[1], 4) == 0.5644
    assert s.confusion == LSBG_CM


def test_llava_morphology_and_merged_numbers():
    y_true, y_pred = predictions_from_confusion(MORPH_CM)
    assert score(y_true, y_pred, 4).accuracy == pytest.approx(0.470)
    assert score(y_true, y_pred, 4).support == [140, 119, 100, 141]
    mt, mp = merge_predictions(y_true, y_pred, [0, 1, 1, 2])
    merged = score(mt, mp, 3)
    assert merged.accuracy == pytest.approx(0.542)
    assert merged.confusion == [[136, 2, 2], [27, 100, 92], [104, 2, 35]]


def test_published_rows_reproduce_paper_numbers():
    citation, rows = load_published()
    assert "Tanoglidis" in citation
    by_key = {(r.task, r.model.split(" ")[0]): r for r in rows}
    assert by_key[("lsbg", "LLaVA-NeXT")].accuracy == pytest.approx(0.574)
    assert by_key[("morphology", "LLaVA-NeXT")].accuracy == pytest.approx(0.470)
    assert by_key[("morphology-merged", "LLaVA-NeXT")].accuracy == pytest.approx(0.542)
    assert by_key[("lsbg", "GPT-4o")].accuracy == 0.83
    assert by_key[("morphology-merged", "GPT-4o")].scores is None


def test_unparseable_counts_as_wrong_and_is_reported():
    s = score([0, 1, 1, 0], [0, None, 1, None], 2)
    assert s.accuracy == 0.5 and s.unparseable == 2
    assert s.unparseable_by_class == [1, 1]
    assert s.confusion == [[1, 0], [0, 1]]
    assert s.recall == [0.5, 0.5]


def test_wilson_interval_known_values():
    # LLaVA LSBG, by hand: centre 0.5778416/1.0076832, half-width 0.043183
    lo, hi = wilson_interval(287, 500)
    assert (round(lo, 4), round(hi, 4)) == (0.5303, 0.6166)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert math.isclose(lo + hi, 1.0)


def test_score_rejects_bad_input():
    with pytest.raises(ValueError, match="as many predictions"):
        score([0, 1], [0], 2)
    with pytest.raises(ValueError, match="0..1"):
        score([0, 1], [0, 3], 2)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 5).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.one_of(st.none(), st.integers(0, k - 1))),
                         min_size=0, max_size=60))))
def test_numpy_scores_equal_scikit_learn(case):
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    k, pairs = case
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    s = score(y_true, y_pred, k)
    if not pairs:
        assert s.n == 0 and s.confusion == [[0] * k for _ in range(k)]
        return
    yp = [-1 if p is None else p for p in y_pred]
    p, r, f, sup = precision_recall_fscore_support(y_true, yp, labels=list(range(k)), zero_division=0)
    assert s.confusion == confusion_matrix(y_true, yp, labels=list(range(k))).tolist()
    assert np.allclose(s.precision, p) and np.allclose(s.recall, r) and np.allclose(s.f1, f)
    assert s.support == [int(x) for x in sup]


def test_calibration_on_designed_probabilities():
    from benchmark.metrics import calibration

    y = [0, 0, 1, 1]
    probs = [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]]
    cal = calibration(y, probs, 2)
    # Brier: mean of (p0 - t0)^2 + (p1 - t1)^2
    assert cal["brier"] == pytest.approx((0.02 + 0.32 + 0.18 + 0.605) / 4)
    # top-class confidences 0.9, 0.6, 0.7, 0.55 (right, right, right, wrong), 10 bins:
    # bins 9 {0.9: 1}, 6 {0.6: 1}, 7 {0.7: 1}, 5 {0.55: 0} -> |0.9-1| + |0.6-1| + |0.7-1| + |0.55-0|
    assert cal["ece"] == pytest.approx((0.1 + 0.4 + 0.3 + 0.55) / 4)
    # P(class 1) >= 0.45 labels samples 2, 3 as 1 and 0, 1 as 0: all right
    assert (cal["best_threshold"], cal["best_threshold_accuracy"]) == (0.45, 1.0)
    assert calibration(y, [None] * 4, 2) is None
