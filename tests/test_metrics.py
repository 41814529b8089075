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
    # top-class confidences 0.9, 0.6, 0.7, 0.55 (right, right, right, wrong), 10 bins closed on the
    # right (as scikit-learn's calibration_curve): (0.8, 0.9] {0.9: 1}, (0.6, 0.7] {0.7: 1},
    # (0.5, 0.6] {0.6: 1, 0.55: 0} -> |0.9-1| + |0.7-1| + 2 |0.575-0.5|
    assert cal["ece"] == pytest.approx((0.1 + 0.3 + 2 * 0.075) / 4)
    # P(class 1) >= 0.45 labels samples 2, 3 as 1 and 0, 1 as 0: all right
    assert (cal["best_threshold"], cal["best_threshold_accuracy"]) == (0.45, 1.0)
    assert calibration(y, [None] * 4, 2) is None


# -- the views' data: reliability bins, ROC and precision-recall curves ---------------------------

def test_reliability_roc_and_pr_of_designed_probabilities():
    from fractions import Fraction

    from benchmark.metrics import calibration
    from tests.support.results import DESIGNED_LABELS, DESIGNED_P1

    cal = calibration(DESIGNED_LABELS, [[1 - p, p] for p in DESIGNED_P1], 2)
    # P(1) 0.875 0.875 0.75 0.625 0.5 0.375 0.25 0.125, labels 1 0 1 0 1 1 0 0; argmax 1 1 1 1 0 0 0 0
    # (0.5 ties go to class 0): right, wrong, right, wrong, wrong, wrong, right, right.
    # Top-class confidence 0.875 x3 (bin (0.8, 0.9]: 2 of 3 right), 0.75 x2 ((0.7, 0.8]: both right),
    # 0.625 x2 ((0.6, 0.7]: both wrong), 0.5 ((0.4, 0.5], bins closed on the right: wrong)
    used = {(b["low"], b["high"]): (b["count"], b["confidence"], b["accuracy"]) for b in cal["reliability"]
            if b["count"]}
    assert used == {(0.4, 0.5): (1, 0.5, 0.0), (0.6, 0.7): (2, 0.625, 0.0), (0.7, 0.8): (2, 0.75, 1.0),
                    (0.8, 0.9): (3, 0.875, 2 / 3)}
    assert [b["count"] for b in cal["reliability"]] == [0, 0, 0, 0, 1, 0, 2, 2, 3, 0]
    assert all(b["confidence"] is None and b["accuracy"] is None for b in cal["reliability"] if not b["count"])
    # ECE = (3 |0.875 - 2/3| + 2 |0.75 - 1| + 2 |0.625 - 0| + 1 |0.5 - 0|) / 8 = (0.625 + 0.5 + 1.25 + 0.5) / 8
    assert cal["ece"] == pytest.approx(23 / 64, abs=1e-15)
    assert cal["brier"] == 125 / 256  # 2 (p1 - y)^2 summed: 2 x 125/64, over 8
    # ROC: per distinct score from the top, (fp, tp) = (1,1) (1,2) (2,2) (2,3) (2,4) (3,4) (4,4); corners
    # only ((2,3) and (3,4) lie on straight runs), from (0, 0); over 4 negatives and 4 positives
    roc = cal["roc"]
    assert roc["fpr"] == [0, 0.25, 0.25, 0.5, 0.5, 1] and roc["tpr"] == [0, 0.25, 0.5, 0.5, 1, 1]
    assert roc["threshold"] == [None, 0.875, 0.75, 0.625, 0.375, 0.125] and roc["points"] == 6
    assert Fraction(roc["auc"]) == Fraction(21, 32)  # Mann-Whitney: (3.5 + 3 + 2 + 2) / 16 pairs
    # PR, recall decreasing: precision tp / (tp + fp) at each threshold from the lowest, (0.25: 4/7, the
    # middle of the run at recall 1, dropped), ending at recall 0, precision 1
    pr = cal["pr"]
    assert pr["recall"] == [1, 1, 0.75, 0.5, 0.5, 0.25, 0]
    assert pr["precision"] == [0.5, 2 / 3, 0.6, 0.5, 2 / 3, 0.5, 1]
    assert pr["threshold"] == [0.125, 0.375, 0.5, 0.625, 0.75, 0.875, None]
    # AP = sum over recall steps of 0.25 x the precision where each recall is first reached
    assert pr["average_precision"] == pytest.approx(0.25 * (2 / 3 + 0.6 + 2 / 3 + 0.5), abs=1e-15)
    assert Fraction(pr["average_precision"]).limit_denominator(1000) == Fraction(73, 120)
    assert pr["prevalence"] == 0.5
    # best threshold: P(1) >= 0.375 -> tp 4, fp 2: accuracy 6/8 (argmax: 4/8); its point on each curve
    assert (cal["best_threshold"], cal["best_threshold_accuracy"]) == (0.375, 0.75)
    assert roc["best"] == {"threshold": 0.375, "fpr": 0.5, "tpr": 1.0}
    assert pr["best"] == {"threshold": 0.375, "recall": 1.0, "precision": 2 / 3}


def test_curves_agree_with_scikit_learn_on_the_designed_probabilities():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from benchmark.metrics import calibration
    from tests.support.results import DESIGNED_LABELS, DESIGNED_P1

    cal = calibration(DESIGNED_LABELS, [[1 - p, p] for p in DESIGNED_P1], 2)
    _assert_like_sklearn(cal, DESIGNED_LABELS, DESIGNED_P1)
    assert cal["roc"]["auc"] == roc_auc_score(DESIGNED_LABELS, DESIGNED_P1)
    assert cal["pr"]["average_precision"] == average_precision_score(DESIGNED_LABELS, DESIGNED_P1)


def _assert_like_sklearn(cal, y, p1):
    """The curves, AUC, AP and reliability bins of ``cal`` against scikit-learn's."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

    y, p1 = np.asarray(y), np.asarray(p1, dtype=float)
    fpr, tpr, thr = roc_curve(y, p1)
    precision, recall, pr_thr = precision_recall_curve(y, p1, drop_intermediate=True)
    assert cal["roc"]["fpr"] == fpr.tolist() and cal["roc"]["tpr"] == tpr.tolist()
    assert cal["roc"]["threshold"] == [None, *thr[1:].tolist()]
    assert cal["pr"]["precision"] == precision.tolist() and cal["pr"]["recall"] == recall.tolist()
    assert cal["pr"]["threshold"] == [*pr_thr.tolist(), None]
    assert cal["roc"]["points"] == len(fpr) and cal["pr"]["points"] == len(precision)
    assert cal["roc"]["auc"] == float(np.trapezoid(tpr, fpr))  # = roc_auc_score
    assert cal["pr"]["average_precision"] == pytest.approx(average_precision_score(y, p1), abs=1e-12)
    probs = np.c_[1 - p1, p1]
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == y).astype(int)
    acc, mean_conf = calibration_curve(correct, conf, n_bins=cal["ece_bins"], pos_label=1)
    used = [b for b in cal["reliability"] if b["count"]]
    assert np.allclose([b["accuracy"] for b in used], acc) and np.allclose([b["confidence"] for b in used], mean_conf)


def _best_threshold_by_brute_force(y, p1):
    """Every candidate threshold tried in turn (the definition; quadratic)."""
    y, p1 = np.asarray(y), np.asarray(p1, dtype=float)
    candidates = np.unique(np.concatenate([p1, [np.inf]]))
    accs = [float(((p1 >= t).astype(int) == y).mean()) for t in candidates]
    best = int(np.argmax(accs))
    return None if np.isinf(candidates[best]) else float(candidates[best]), accs[best]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
                                                        st.floats(0, 1))), min_size=2, max_size=80))
def test_curves_and_bins_equal_scikit_learn(pairs):
    from benchmark.metrics import calibration

    y = [t for t, _ in pairs]
    p1 = [p for _, p in pairs]
    cal = calibration(y, [[1 - p, p] for p in p1], 2)
    assert (cal["best_threshold"], cal["best_threshold_accuracy"]) == _best_threshold_by_brute_force(y, p1)
    if len(set(y)) < 2:
        assert cal["roc"] is None and cal["pr"] is None  # undefined with one class
        return
    _assert_like_sklearn(cal, y, p1)
    ece = sum(b["count"] * abs(b["confidence"] - b["accuracy"]) for b in cal["reliability"] if b["count"]) / len(y)
    assert cal["ece"] == pytest.approx(ece)


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 5).flatmap(lambda k: st.tuples(st.just(k), st.lists(
    st.tuples(st.integers(0, k - 1), st.lists(st.floats(0.01, 1), min_size=k, max_size=k)), min_size=1, max_size=40))))
def test_reliability_bins_of_many_classes_equal_scikit_learn(case):
    from sklearn.calibration import calibration_curve

    from benchmark.metrics import calibration

    k, rows = case
    y = np.array([t for t, _ in rows])
    probs = np.array([w for _, w in rows])
    probs = probs / probs.sum(axis=1, keepdims=True)
    cal = calibration(y.tolist(), probs.tolist(), k)
    assert "roc" not in cal and "pr" not in cal  # curves are for two classes
    correct = (probs.argmax(axis=1) == y).astype(int)
    acc, conf = calibration_curve(correct, probs.max(axis=1), n_bins=10, pos_label=1)
    used = [b for b in cal["reliability"] if b["count"]]
    assert np.allclose([b["accuracy"] for b in used], acc) and np.allclose([b["confidence"] for b in used], conf)
    assert sum(b["count"] for b in cal["reliability"]) == len(y)


def test_thin_curve_keeps_the_first_point_of_each_stretch():
    from benchmark.metrics import thin_curve

    x, y = np.arange(9) / 8, np.zeros(9)  # length 1; 9 points
    assert thin_curve(x, y, max_points=9).tolist() == list(range(9))  # short enough: all
    # max_points 6 -> 4 stretches of 0.25: the first point of each (0, 2, 4, 6), and the last
    assert thin_curve(x, y, max_points=6).tolist() == [0, 2, 4, 6, 8]
    # point 5 kept on request -> 3 stretches of 1/3: 0, 3 (3/8 >= 1/3), 6 (6/8 >= 2/3), then 5 and 8
    assert thin_curve(x, y, max_points=6, keep=[5]).tolist() == [0, 3, 5, 6, 8]


def test_curves_of_50000_samples_stay_small_and_exact_where_it_counts():
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    from benchmark.metrics import CURVE_POINTS, calibration

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 50_000)
    p1 = 1 / (1 + np.exp(-(rng.normal(0, 1, y.size) + 2 * (y - 0.5))))
    cal = calibration(y.tolist(), np.c_[1 - p1, p1].tolist(), 2)
    roc, pr = cal["roc"], cal["pr"]
    assert roc["points"] > 10 * CURVE_POINTS and pr["points"] > 10 * CURVE_POINTS  # thinned, both
    assert len(roc["fpr"]) <= CURVE_POINTS and len(pr["recall"]) <= CURVE_POINTS
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
    assert (pr["recall"][0], pr["recall"][-1], pr["precision"][-1]) == (1, 0, 1)
    # AUC and AP come from the whole curves; the best threshold's point is one of those kept
    assert roc["auc"] == pytest.approx(roc_auc_score(y, p1), abs=1e-12)
    assert pr["average_precision"] == pytest.approx(average_precision_score(y, p1), abs=1e-12)
    assert roc["best"]["threshold"] in roc["threshold"] and pr["best"]["threshold"] in pr["threshold"]
    i = roc["threshold"].index(roc["best"]["threshold"])
    assert (roc["fpr"][i], roc["tpr"][i]) == (roc["best"]["fpr"], roc["best"]["tpr"])
    # every point dropped lies within L / (CURVE_POINTS - 3) of the kept point before it (along the curve)
    fpr, tpr, thr = roc_curve(y, p1)
    along = np.r_[0, np.cumsum(np.abs(np.diff(fpr)) + np.abs(np.diff(tpr)))]
    kept = np.flatnonzero(np.isin(thr, [np.inf if t is None else t for t in roc["threshold"]]))
    gap = along[np.r_[kept[1:], len(fpr)] - 1] - along[kept]
    assert gap.max() <= along[-1] / (CURVE_POINTS - 3)


def test_calibration_of_one_class_has_no_curves():
    from benchmark.metrics import calibration

    cal = calibration([0, 0, 0], [[0.75, 0.25], [0.5, 0.5], [0.875, 0.125]], 2)
    assert cal["roc"] is None and cal["pr"] is None
    # nothing called class 1 is best: the threshold above every score (None)
    assert (cal["best_threshold"], cal["best_threshold_accuracy"]) == (None, 1.0)
    assert [b["count"] for b in cal["reliability"]][4:9] == [1, 0, 0, 1, 1]
