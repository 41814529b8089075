"""Synthetic results (made up here, not measurements of any model) for the report tests."""

from __future__ import annotations

import numpy as np

from benchmark.metrics import merge_predictions, score
from benchmark.session import CaseResult

MORPH = ["smooth round", "smooth cigar", "edge-on disk", "unbarred spiral"]
MERGED = ["smooth round", "cigar or edge-on", "unbarred spiral"]
PRICES = {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10.0}}


def make_result(case_id: str, task: str, model: str, classes: list[str], y_true: list[int],
                y_pred: list[int | None], *, probs: list[list[float]] | None = None,
                usage: dict[str, int] | None = None, wall_s: float = 2.0, derived_from: str | None = None,
                threshold: float | None = None, cached: int = 0) -> CaseResult:
    predictions = [{"sample_id": str(i), "true": t, "raw": f"Category {p}", "parsed": p,
                    **({"probs": probs[i]} if probs else {})} for i, (t, p) in enumerate(zip(y_true, y_pred))]
    return CaseResult(case_id=case_id, task=task, model=model, model_id=f"{model}-id", prompt="paper",
                      classes=list(classes), scores=score(y_true, y_pred, len(classes)), threshold=threshold,
                      threshold_note="", predictions=predictions, wall_s=wall_s, usage=usage or {},
                      derived_from=derived_from, cached=cached)


# Designed probabilities (tests of the calibration views): P(class 1) of 8 samples, highest first,
# with a tie at 0.875 and one sample at 0.5 (argmax class 0, confidence 0.5). Hand-worked values
# are in tests/test_metrics.py.
DESIGNED_LABELS = [1, 0, 1, 0, 1, 1, 0, 0]
DESIGNED_P1 = [0.875, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
# Three classes, 6 samples: top-class confidences 0.75 (right), 0.5 (wrong), 0.875 (right), 0.75 (right),
# 0.625 (wrong), 0.875 (right) -> 4 bins used: (0.4, 0.5], (0.6, 0.7], (0.7, 0.8], (0.8, 0.9]
DESIGNED_3_LABELS = [0, 1, 2, 0, 1, 2]
DESIGNED_3_PROBS = [[0.75, 0.125, 0.125], [0.5, 0.25, 0.25], [0.0625, 0.0625, 0.875], [0.75, 0.25, 0.0],
                    [0.125, 0.25, 0.625], [0.0625, 0.0625, 0.875]]


def designed_probability_results() -> list[CaseResult]:
    """An LSBG case with :data:`DESIGNED_P1`, a morphology-like case with three classes and
    :data:`DESIGNED_3_PROBS`, and an LSBG case without probabilities (made up, not measurements)."""
    probs = [[1 - p, p] for p in DESIGNED_P1]
    argmax = [int(p > 0.5) for p in DESIGNED_P1]
    three = ["smooth", "cigar or disk", "spiral"]
    argmax3 = [max(range(3), key=row.__getitem__) for row in DESIGNED_3_PROBS]
    return [make_result("lsbg-scored", "lsbg", "scored", ["artifact", "LSBG"], DESIGNED_LABELS, argmax, probs=probs),
            make_result("morphology-scored", "morphology", "scored", three, DESIGNED_3_LABELS, argmax3,
                        probs=DESIGNED_3_PROBS),
            make_result("lsbg-text", "lsbg", "text", ["artifact", "LSBG"], DESIGNED_LABELS, argmax)]


def synthetic_results(seed: int = 3, n: int = 60) -> list[CaseResult]:
    """Four cases: LSBG and morphology (+ merged) for a priced API model, LSBG with probabilities."""
    rng = np.random.default_rng(seed)
    lsbg_true = [int(x) for x in rng.integers(0, 2, n)]
    lsbg_pred: list[int | None] = [t if rng.random() < 0.8 else 1 - t for t in lsbg_true]
    lsbg_pred[3] = None
    morph_true = [int(x) for x in rng.integers(0, 4, n)]
    morph_pred: list[int | None] = [t if rng.random() < 0.65 else int((t + 1) % 4) for t in morph_true]
    morph_pred[5] = morph_pred[9] = None
    mt, mp = merge_predictions(morph_true, morph_pred, [0, 1, 1, 2])
    probs = []
    for t in lsbg_true:
        p1 = float(np.clip(0.5 + (0.25 if t else -0.25) + rng.normal(0, 0.2), 0.01, 0.99))
        probs.append([1 - p1, p1])
    llava_pred: list[int | None] = [int(p[1] > 0.5) for p in probs]
    usage = {"prompt_tokens": 1200 * n, "completion_tokens": 6 * n}
    return [
        make_result("lsbg-gpt-4o", "lsbg", "gpt-4o", ["artifact", "LSBG"], lsbg_true, lsbg_pred,
                    usage=usage, wall_s=12.0, threshold=0.8),
        make_result("morphology-gpt-4o", "morphology", "gpt-4o", MORPH, morph_true, morph_pred,
                    usage=usage, wall_s=15.0, threshold=0.62),
        make_result("morphology-merged-gpt-4o", "morphology-merged", "gpt-4o", MERGED, mt, mp,
                    usage=usage, wall_s=15.0, derived_from="morphology", threshold=0.85),
        make_result("lsbg-llava-next", "lsbg", "llava-next", ["artifact", "LSBG"], lsbg_true, llava_pred,
                    probs=probs, usage={}, wall_s=0.05, cached=n),
    ]
