"""Scores of one case: accuracy with a Wilson 95% CI, per-class P/R/F1,
macro-F1 and the confusion matrix (scikit-learn), and what a referee asks beside
accuracy: the chance (majority-class) accuracy of the sample, balanced accuracy,
Cohen's kappa, and the accuracy on parsed answers with the share that had no class.

Unparseable answers and refusals (prediction ``None``) count as wrong in
accuracy and recall, are counted separately (each on its own), and never enter the confusion matrix as a
class: the matrix has an extra count of unparseable answers per true class.

Cohen's kappa treats an answer with no class (unparseable or refused) as one more
predicted category, "no class", that no true label has: it is never agreement, and it
takes its share out of the predicted-class marginals. This equals scikit-learn's
``cohen_kappa_score(y_true, y_pred)`` with ``None`` written as a label of its own (e.g. -1).

Class probabilities (:func:`calibration`): Brier score, ECE over the reliability diagram's
bins and, for two classes, the best-threshold accuracy and the ROC and precision-recall
curves (numpy, equal to scikit-learn's in the tests), thinned for plotting.

Thresholds (:func:`fail_probability`): the chance that a model whose true accuracy is
``p`` scores below a threshold on ``n`` images, ``P(Binomial(n, p) / n < threshold)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Scores:
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    macro_f1: float
    unparseable: int
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]         # rows = true, cols = predicted (parsed answers only)
    unparseable_by_class: list[int]    # answers with no class (unparseable or refused) per true class
    refused: int = 0                   # the model declined to answer (not counted in unparseable)
    # Derived from the fields above when not given (results files written before they existed):
    chance_accuracy: float | None = None    # majority-class share of the sample: always answering it scores this
    balanced_accuracy: float | None = None  # mean recall over the classes present (no-class answers are wrong)
    kappa: float | None = None              # Cohen's kappa, "no class" a category of its own; None if undefined
    n_parsed: int | None = None             # answers with a class (n - unparseable - refused)
    parsed_accuracy: float | None = None    # correct / n_parsed; None when no answer had a class
    no_class_rate: float | None = None      # (unparseable + refused) / n

    def __post_init__(self) -> None:
        for name, value in _derived(self).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _derived(s: Scores) -> dict[str, Any]:
    """The referee's numbers from the counts of ``s`` (support, confusion, no-class answers)."""
    n = s.n
    support = list(s.support)
    diag = [row[i] for i, row in enumerate(s.confusion)]
    cols = [sum(col) for col in zip(*s.confusion)] if s.confusion else []
    recalls = [d / t for d, t in zip(diag, support) if t > 0]
    # kappa = (p_o - p_e) / (1 - p_e), p_e = sum_k true_k * predicted_k / n^2 over the classes
    # ("no class" has no true labels, so it adds nothing to p_e); in integers, so exact.
    agree_by_chance = sum(t * c for t, c in zip(support, cols))
    kappa = None if n == 0 or agree_by_chance == n * n else \
        (s.correct * n - agree_by_chance) / (n * n - agree_by_chance)
    n_parsed = n - s.unparseable - s.refused
    return {
        "chance_accuracy": max(support) / n if n and support else 0.0,
        "balanced_accuracy": sum(recalls) / len(recalls) if recalls else 0.0,
        "kappa": kappa,
        "n_parsed": n_parsed,
        "parsed_accuracy": s.correct / n_parsed if n_parsed > 0 else None,
        "no_class_rate": (s.unparseable + s.refused) / n if n else 0.0,
    }


def fail_probability(n: int, p: float, threshold: float) -> float:
    """P(Binomial(n, p) / n < threshold): how often a model with true accuracy ``p``
    fails a gate ``accuracy >= threshold`` on ``n`` images (exact, stdlib only).

    A score of k correct fails when ``k / n < threshold``, tested exactly as the gate
    tests it, so a threshold such as 0.85 x 500 = 425 is not lost to rounding.
    """
    if n <= 0:
        return 0.0
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"expected an accuracy in [0, 1], found {p}")
    failing = [k for k in range(n + 1) if k / n < threshold]
    if not failing:
        return 0.0
    if p in (0.0, 1.0):
        return float(any(k == round(p * n) for k in failing))
    lp, lq = math.log(p), math.log1p(-p)
    lgn = math.lgamma(n + 1)
    total = math.fsum(math.exp(lgn - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp + (n - k) * lq)
                      for k in failing)
    return min(1.0, total)


def score(y_true: Sequence[int], y_pred: Sequence[int | None], n_classes: int, *,
          refused: Sequence[bool] | None = None) -> Scores:
    """Score predictions; ``None`` in ``y_pred`` means no class: unparseable, or
    refused where ``refused`` says so. Both count as wrong."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"expected as many predictions as labels, found {len(y_pred)} vs {len(y_true)}")
    yt = np.asarray(y_true, dtype=int)
    bad = [p for p in y_pred if p is not None and not 0 <= p < n_classes]
    if bad or (len(yt) and (yt.min() < 0 or yt.max() >= n_classes)):
        raise ValueError(f"expected labels in 0..{n_classes - 1}, found {sorted(set(bad)) or sorted(set(yt))}")
    yp = np.asarray([-1 if p is None else p for p in y_pred], dtype=int)
    n = len(yt)
    correct = int((yt == yp).sum())
    labels = list(range(n_classes))
    p, r, f, s, cm = _per_class(yt, yp, n_classes)
    unparseable_by_class = [int(((yp == -1) & (yt == c)).sum()) for c in labels]
    lo, hi = wilson_interval(correct, n)
    n_refused = sum(1 for p, r in zip(y_pred, refused or ()) if r and p is None)
    return Scores(
        n=n,
        correct=correct,
        accuracy=correct / n if n else 0.0,
        ci_low=lo,
        ci_high=hi,
        macro_f1=float(np.mean(f)),
        unparseable=int((yp == -1).sum()) - n_refused,
        precision=[float(x) for x in p],
        recall=[float(x) for x in r],
        f1=[float(x) for x in f],
        support=[int(x) for x in s],
        confusion=cm.astype(int).tolist(),
        unparseable_by_class=unparseable_by_class,
        refused=n_refused,
    )


def _per_class(yt: np.ndarray, yp: np.ndarray, n_classes: int) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1, support and confusion matrix (rows true, columns predicted;
    predictions -1 belong to no column), as scikit-learn's ``precision_recall_fscore_support``
    and ``confusion_matrix`` with ``labels=range(n_classes), zero_division=0`` compute them
    (checked against them in the tests), in numpy: importing sklearn.metrics costs ~1 s."""
    parsed = yp >= 0
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (yt[parsed], yp[parsed]), 1)
    tp = np.diag(cm).astype(float)
    support = np.bincount(yt, minlength=n_classes)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(n_classes), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n_classes), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(n_classes), where=both > 0)
    return precision, recall, f1, support, cm


def merge_predictions(
    y_true: Sequence[int], y_pred: Sequence[int | None], mapping: Sequence[int]
) -> tuple[list[int], list[int | None]]:
    """Map old class indices to merged ones (``None`` stays ``None``)."""
    return [mapping[t] for t in y_true], [None if p is None else mapping[p] for p in y_pred]


def predictions_from_confusion(confusion: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Expand a confusion matrix (rows true, cols predicted) into label lists."""
    y_true: list[int] = []
    y_pred: list[int] = []
    for t, row in enumerate(confusion):
        for p, count in enumerate(row):
            y_true += [t] * int(count)
            y_pred += [p] * int(count)
    return y_true, y_pred


def row_normalised(
    confusion: Sequence[Sequence[int]], unparseable_by_class: Sequence[int] | None = None
) -> list[list[float]]:
    """Each row divided by its true-class total (unparseable answers included).

    With ``unparseable_by_class`` the total is the class support, so the
    diagonal is the per-class recall; a row with no samples stays all zero.
    """
    rows = np.asarray(confusion, dtype=float)
    extra = np.zeros(len(rows)) if unparseable_by_class is None else np.asarray(unparseable_by_class, float)
    if extra.shape != (len(rows),):
        raise ValueError(f"expected {len(rows)} unparseable counts, found {extra.shape[0]}")
    totals = rows.sum(axis=1) + extra
    out = np.divide(rows, totals[:, None], out=np.zeros_like(rows), where=totals[:, None] > 0)
    return out.tolist()


def roc_auc(y_true: Sequence[int], probs: Sequence[Sequence[float] | None], n_classes: int) -> float | None:
    """ROC-AUC from class probabilities: binary, or one-vs-rest macro average.

    None when any sample has no probabilities, their length is not
    ``n_classes``, or the true labels hold fewer than two classes (undefined).
    """
    if not probs or any(p is None or len(p) != n_classes for p in probs):
        return None
    yt = np.asarray(y_true, dtype=int)
    present = sorted(set(yt.tolist()))
    if len(present) < 2:
        return None
    from sklearn.metrics import roc_auc_score  # ~0.7 s to import: only when there is an AUC to compute

    p = np.asarray(probs, dtype=float)
    if n_classes == 2:
        return float(roc_auc_score(yt, p[:, 1]))
    sums = p.sum(axis=1, keepdims=True)
    if not np.allclose(sums, 1.0, atol=1e-6):  # scores over the classes, not probabilities: normalise
        p = np.divide(p, sums, out=np.full_like(p, 1.0 / n_classes), where=sums > 0)
    # one-vs-rest per class present in the sample (a class with no positives has no AUC)
    aucs = [roc_auc_score(yt == c, p[:, c]) for c in present]
    return float(np.mean(aucs))


CURVE_POINTS = 400  # most points kept per ROC or PR curve in the results and the plots (thin_curve)


def calibration(y_true: Sequence[int], probs: Sequence[Sequence[float] | None], n_classes: int,
                *, bins: int = 10, max_points: int = CURVE_POINTS) -> dict[str, Any] | None:
    """Brier score (mean squared error of the class probabilities against the one-hot truth),
    expected calibration error (ECE: confidence of the top class vs its accuracy, over the
    ``reliability`` bins, weighted by count) and, for two classes, the best accuracy over
    thresholds on P(class 1) with that threshold (tuned on the sample itself) and the ROC and
    precision-recall curves of class 1 (:func:`binary_curves`). None without probabilities for
    every sample."""
    if not probs or any(p is None or len(p) != n_classes for p in probs):
        return None
    yt = np.asarray(y_true, dtype=int)
    p = np.asarray(probs, dtype=float)
    onehot = np.eye(n_classes)[yt]
    brier = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    reliability = reliability_bins(conf, pred == yt, bins=bins)
    ece = sum(b["count"] * abs(b["confidence"] - b["accuracy"]) for b in reliability if b["count"]) / len(yt)
    out: dict[str, Any] = {"brier": brier, "ece": float(ece), "ece_bins": bins, "reliability": reliability}
    if n_classes == 2:
        out.update(binary_curves(yt, p[:, 1], max_points=max_points))
    return out


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, *, bins: int = 10) -> list[dict[str, Any]]:
    """The reliability diagram's data: ``bins`` equal bins of top-class confidence over [0, 1],
    each closed on the right, (0.1, 0.2], as scikit-learn's ``calibration_curve`` bins (0 goes
    in the first). Per bin: its edges, the number of answers, their mean confidence and their
    accuracy (both None when the bin is empty)."""
    confidence = np.asarray(confidence, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], confidence)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    right = np.bincount(which, weights=np.asarray(correct, dtype=float), minlength=bins)
    return [{"low": b / bins, "high": (b + 1) / bins, "count": int(count[b]),
             "confidence": float(conf_sum[b] / count[b]) if count[b] else None,
             "accuracy": float(right[b] / count[b]) if count[b] else None} for b in range(bins)]


def binary_curves(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, *,
                  max_points: int = CURVE_POINTS) -> dict[str, Any]:
    """For two classes, scores = P(class 1), class 1 the positive one: the accuracy at the best
    threshold (``scores >= t`` is class 1; of equally good thresholds the lowest; tuned on the
    sample, not a fair score), and the ROC and precision-recall curves with AUC, average
    precision and the best threshold's point on each; ``roc`` and ``pr`` are None unless both
    classes occur. A threshold of None is above every score: nothing is called class 1.

    The curves are scikit-learn's ``roc_curve`` (corners only: ``drop_intermediate``) and
    ``precision_recall_curve`` (``drop_intermediate=True``, recall decreasing, ending at
    recall 0, precision 1), thinned by :func:`thin_curve` when longer than ``max_points``.
    AUC and average precision come from the whole curves, as ``roc_auc_score`` and
    ``average_precision_score`` compute them.
    """
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(scores, dtype=float)
    n, pos = len(y), int(y.sum())
    neg = n - pos
    tps, fps, thr = _counts_at_thresholds(y, s)
    # accuracy = (tp + tn) / n for "no sample positive" (threshold above every score), then each
    # distinct score from the highest down; the last maximum is the lowest threshold
    accs = np.r_[neg, tps + neg - fps] / n
    best = len(accs) - 1 - int(np.argmax(accs[::-1]))
    tp, fp, threshold = (0, 0, None) if best == 0 else \
        (int(tps[best - 1]), int(fps[best - 1]), float(thr[best - 1]))
    out: dict[str, Any] = {"best_threshold": threshold, "best_threshold_accuracy": float(accs[best]),
                           "roc": None, "pr": None}
    if pos == 0 or neg == 0:
        return out
    out["roc"] = _roc(tps, fps, thr, max_points=max_points,
                      best={"threshold": threshold, "fpr": fp / neg, "tpr": tp / pos})
    out["pr"] = _pr(tps, fps, thr, prevalence=pos / n, max_points=max_points,
                    best=None if best == 0 else {"threshold": threshold, "recall": tp / pos,
                                                 "precision": tp / (tp + fp)})
    return out


def _counts_at_thresholds(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct score, highest first: the positives and the negatives scored at or above
    it, and the score (scikit-learn's binary curve counts)."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s, yy = scores[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(yy)[last]
    return tps, last + 1 - tps, s[last]


def _roc(tps: np.ndarray, fps: np.ndarray, thr: np.ndarray, *, best: dict[str, Any],
         max_points: int) -> dict[str, Any]:
    if len(fps) > 2:  # corners only: a point on a straight run changes neither the curve nor its area
        corner = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        tps, fps, thr = tps[corner], fps[corner], thr[corner]
    fpr, tpr = np.r_[0, fps] / fps[-1], np.r_[0, tps] / tps[-1]
    thr = np.r_[np.inf, thr]
    auc = float(np.trapezoid(tpr, fpr))
    keep = thin_curve(fpr, tpr, max_points=max_points, keep=_where(thr, best["threshold"]))
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(), "threshold": _thresholds(thr[keep]),
            "auc": auc, "points": len(fpr), "best": best}


def _pr(tps: np.ndarray, fps: np.ndarray, thr: np.ndarray, *, prevalence: float, best: dict[str, Any] | None,
        max_points: int) -> dict[str, Any]:
    if len(tps) > 2:  # the first and last point of each recall: the others lie on a vertical run
        ends = np.flatnonzero(np.r_[True, np.logical_or(np.diff(tps[:-1]), np.diff(tps[1:])), True])
        tps, fps, thr = tps[ends], fps[ends], thr[ends]
    precision = np.r_[(tps / (tps + fps))[::-1], 1.0]
    recall = np.r_[(tps / tps[-1])[::-1], 0.0]
    thr = np.r_[thr[::-1], np.inf]
    ap = max(0.0, float(-np.sum(np.diff(recall) * precision[:-1])))
    keep = thin_curve(recall, precision, max_points=max_points,
                      keep=_where(thr, best["threshold"]) if best else ())
    return {"recall": recall[keep].tolist(), "precision": precision[keep].tolist(),
            "threshold": _thresholds(thr[keep]), "average_precision": ap, "prevalence": prevalence,
            "points": len(recall), "best": best}


def _where(thresholds: np.ndarray, t: float | None) -> list[int]:
    return np.flatnonzero(thresholds == (np.inf if t is None else t)).tolist()


def _thresholds(thr: np.ndarray) -> list[float | None]:
    """Thresholds for JSON: None for "above every score" (infinity is not JSON)."""
    return [None if np.isinf(t) else float(t) for t in thr]


def thin_curve(x: np.ndarray, y: np.ndarray, *, max_points: int = CURVE_POINTS,
               keep: Sequence[int] = ()) -> np.ndarray:
    """Indices of the points of the polyline (x, y) to keep: all of them when there are at most
    ``max_points``; else the first and the last, those in ``keep``, and the first point of each
    successive stretch of length L / m along the line (L its length in |dx| + |dy|, m =
    ``max_points - 2 - len(keep)``). So at most ``max_points`` are kept, and every point dropped
    lies within L / m (along the line) of the kept point before it: for a ROC curve (L <= 2)
    and 400 points, within about 0.005.
    """
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    step = np.abs(np.diff(x)) + np.abs(np.diff(y))
    along = np.r_[0.0, np.cumsum(step)]
    stretches = max(1, max_points - 2 - len(keep))
    if along[-1] == 0:
        return np.unique(np.r_[0, n - 1, np.asarray(keep, dtype=int)])
    stretch = np.minimum((along / along[-1] * stretches).astype(int), stretches - 1)
    _, first = np.unique(stretch, return_index=True)
    return np.unique(np.r_[first, n - 1, np.asarray(keep, dtype=int)])


def merge_probs(probs: Sequence[float], mapping: Sequence[int]) -> list[float]:
    """Class probabilities summed into merged classes (``mapping``: old -> new)."""
    if len(probs) != len(mapping):
        raise ValueError(f"expected {len(mapping)} probabilities, found {len(probs)}")
    out = [0.0] * (max(mapping) + 1)
    for old, new in enumerate(mapping):
        out[new] += float(probs[old])
    return out


def estimate_cost(usage: dict[str, int], prices: dict[str, float] | None) -> float | None:
    """USD from token totals and ``{input_per_mtok, output_per_mtok}``; None without prices.
    The tokens of answers that came through the Batch API (``batch_prompt_tokens``,
    ``batch_completion_tokens``, part of the totals) cost ``prices["batch"]`` times as much."""
    if not prices or "input_per_mtok" not in prices or "output_per_mtok" not in prices:
        return None
    if "prompt_tokens" not in usage and "completion_tokens" not in usage:
        return None
    factor = 1.0 if prices.get("batch") is None else float(prices["batch"])
    cost = 0.0
    for kind, price in (("prompt_tokens", prices["input_per_mtok"]), ("completion_tokens", prices["output_per_mtok"])):
        batch = usage.get(f"batch_{kind}", 0)
        cost += ((usage.get(kind, 0) - batch) + batch * factor) * float(price)
    return cost / 1e6
