"""Calibration and curve data of a whole-dataset run (pytest-benchmark, group ``curves``).

``benchmark.metrics.calibration`` over 50,000 binary answers with class probabilities
(random scores, made up here): Brier, ECE and its reliability bins, the best threshold, and
the ROC and precision-recall curves thinned to at most ``CURVE_POINTS`` points. The report
computes it for every output it writes, so it must stay near linear: choosing the best
threshold by trying each one in turn (the first version) took 3.5 s here at 50,000.

Target: >= 250,000 answers/s (mean). Measured on a shared 2-core CPU, other jobs running:
mean 0.03-0.05 s per 50,000 (1.1-1.8 million answers/s). Plain asserts (with or without timings): the curves
are thinned, and the three SVG charts of such a case stay small in the HTML page.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from benchmark.metrics import CURVE_POINTS, calibration
from benchmark.report import probability_charts
from tests.support.results import make_result

N_ANSWERS = 50_000
MIN_ANSWERS_PER_S = 250_000
MAX_CHART_BYTES = 40_000  # the three SVG charts of one case


@pytest.fixture(scope="module")
def scored() -> tuple[list[int], list[list[float]]]:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, N_ANSWERS)
    p1 = 1 / (1 + np.exp(-(rng.normal(0, 1, N_ANSWERS) + 2 * (y - 0.5))))
    return y.tolist(), np.c_[1 - p1, p1].tolist()


@pytest.mark.benchmark(group="curves")
def test_calibration_of_50000_answers(benchmark: Any, perf: Any, scored: tuple[list[int], list[list[float]]]) -> None:
    y, probs = scored
    cal = benchmark(calibration, y, probs, 2)
    assert cal["roc"]["points"] > 10 * CURVE_POINTS and len(cal["roc"]["fpr"]) <= CURVE_POINTS
    assert cal["pr"]["points"] > 10 * CURVE_POINTS and len(cal["pr"]["recall"]) <= CURVE_POINTS
    result = make_result("lsbg-big", "lsbg", "m", ["artifact", "LSBG"], y, [int(p[1] > 0.5) for p in probs],
                         probs=probs)
    svg = probability_charts(result, cal, chart_id="chart-0")
    assert len(re.findall(r"<svg ", svg)) == 3 and len(svg.encode()) <= MAX_CHART_BYTES, len(svg.encode())
    perf.keep("curves", benchmark, items=N_ANSWERS)
    if benchmark.enabled:
        per_s = 1 / perf.per_item("curves")
        ok = per_s >= MIN_ANSWERS_PER_S
        perf.note(f"{'calibration + curves (answers/s)':<48} {per_s:10,.0f}    "
                  f"target >= {MIN_ANSWERS_PER_S:,}   {'met' if ok else 'MISSED'}; charts {len(svg.encode()):,} B")
        assert ok, f"expected >= {MIN_ANSWERS_PER_S:,} answers/s, found {per_s:,.0f}"
