"""Regression gate: each case against the same case in a baseline results
JSON, on the sample ids both share, with the exact McNemar test.

Per shared sample, correct = ``parsed == true`` (unparseable is wrong).
``b`` = right in the baseline, wrong now; ``c`` = wrong in the baseline,
right now. Δaccuracy = (c - b) / n_shared. The exact McNemar p-value is the
two-sided binomial test on the discordant pairs: ``min(1, 2 P(X <= min(b, c)))``
with ``X ~ Bin(b + c, 1/2)``, and 1 when ``b + c = 0``. A regression is a
drop in accuracy with ``p < alpha``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.core import BenchError
from benchmark.results import RESULTS_SCHEMA, CaseResult

DEFAULT_ALPHA = 0.05


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for discordant counts ``b`` and ``c``."""
    if b < 0 or c < 0:
        raise ValueError(f"expected non-negative discordant counts, found b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class Comparison:
    """One case against its baseline. ``status``: compared, new or no-overlap."""

    case_id: str
    status: str
    n_shared: int = 0
    baseline_accuracy: float | None = None  # on the shared ids
    accuracy: float | None = None           # on the shared ids
    b: int = 0                              # baseline right, now wrong
    c: int = 0                              # baseline wrong, now right
    p_value: float | None = None
    alpha: float = DEFAULT_ALPHA

    @property
    def delta(self) -> float | None:
        if self.accuracy is None or self.baseline_accuracy is None:
            return None
        return self.accuracy - self.baseline_accuracy

    @property
    def regression(self) -> bool:
        return (self.status == "compared" and self.delta is not None and self.delta < 0
                and self.p_value is not None and self.p_value < self.alpha)

    @property
    def verdict(self) -> str:
        if self.status != "compared":
            return self.status
        if self.regression:
            return "REGRESSION"
        if self.p_value is not None and self.p_value < self.alpha and (self.delta or 0) > 0:
            return "improved"
        return "no significant change"

    def describe(self) -> str:
        if self.status != "compared":
            return f"{self.case_id}: {self.status} (no baseline comparison)"
        return (f"{self.case_id}: accuracy regression against the baseline: Δaccuracy "
                f"{self.delta:+.4f} ({self.baseline_accuracy:.4f} -> {self.accuracy:.4f}) on "
                f"n={self.n_shared} shared samples, exact McNemar p={self.p_value:.4g} "
                f"< alpha {self.alpha:g} (b={self.b} right before and wrong now, "
                f"c={self.c} wrong before and right now)")

    def to_json(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "status": self.status, "n_shared": self.n_shared,
                "baseline_accuracy": self.baseline_accuracy, "accuracy": self.accuracy,
                "delta_accuracy": self.delta, "b": self.b, "c": self.c, "p_value": self.p_value,
                "alpha": self.alpha, "regression": self.regression}


def _correct(predictions: Iterable[Mapping[str, Any]]) -> dict[str, bool]:
    return {str(p["sample_id"]): p.get("parsed") is not None and p.get("parsed") == p.get("true")
            for p in predictions}


def compare_predictions(
    case_id: str,
    predictions: Sequence[Mapping[str, Any]],
    baseline_predictions: Sequence[Mapping[str, Any]] | None,
    *,
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """Pair the two runs' per-sample correctness on the ids both share."""
    if baseline_predictions is None:
        return Comparison(case_id, "new", alpha=alpha)
    now, before = _correct(predictions), _correct(baseline_predictions)
    shared = [i for i in now if i in before]
    if not shared:
        return Comparison(case_id, "no-overlap", alpha=alpha)
    b = sum(1 for i in shared if before[i] and not now[i])
    c = sum(1 for i in shared if now[i] and not before[i])
    n = len(shared)
    return Comparison(
        case_id, "compared", n_shared=n,
        baseline_accuracy=sum(before[i] for i in shared) / n,
        accuracy=sum(now[i] for i in shared) / n,
        b=b, c=c, p_value=mcnemar_exact(b, c), alpha=alpha,
    )


class Baseline:
    """A previous ``--bench-results`` JSON, indexed by case id."""

    def __init__(self, path: Path | str, cases: dict[str, list[dict[str, Any]]],
                 provenance: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.cases = cases
        self.provenance = provenance  # what produced the baseline run (benchmark.provenance); None in older files

    @classmethod
    def load(cls, path: Path | str) -> Baseline:
        where = f"--bench-baseline {path}"
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BenchError(f"{where}: file not found; expected a previous --bench-results JSON") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BenchError(f"{where}: expected a results JSON, found unreadable/invalid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA:
            found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
            raise BenchError(f"{where}: expected schema {RESULTS_SCHEMA!r}, found {found!r}")
        cases = doc.get("cases")
        if not isinstance(cases, list):
            raise BenchError(f"{where}: expected 'cases' as a list, found {type(cases).__name__}")
        out: dict[str, list[dict[str, Any]]] = {}
        for i, case in enumerate(cases):
            preds = case.get("predictions") if isinstance(case, dict) else None
            ok = (isinstance(case, dict) and isinstance(case.get("case_id"), str) and isinstance(preds, list)
                  and all(isinstance(p, dict) and {"sample_id", "true", "parsed"} <= p.keys() for p in preds))
            if not ok:
                raise BenchError(f"{where}: cases[{i}]: expected 'case_id' and 'predictions' with "
                                 f"sample_id/true/parsed per sample, found "
                                 f"{sorted(case) if isinstance(case, dict) else type(case).__name__}")
            out[case["case_id"]] = preds
        provenance = doc.get("provenance")
        return cls(path, out, provenance if isinstance(provenance, dict) else None)

    def compare(self, result: CaseResult, *, alpha: float = DEFAULT_ALPHA) -> Comparison:
        return compare_predictions(result.case_id, result.predictions, self.cases.get(result.case_id),
                                   alpha=alpha)


COMPARISON_HEADERS = ["case", "n shared", "baseline acc", "accuracy", "Δacc", "b", "c",
                      "McNemar p", "verdict"]


def comparison_rows(comparisons: Iterable[Comparison]) -> list[list[str]]:
    rows = []
    for c in comparisons:
        if c.status != "compared":
            rows.append([c.case_id, "-", "-", "-", "-", "-", "-", "-", c.verdict])
            continue
        rows.append([c.case_id, str(c.n_shared), f"{c.baseline_accuracy:.3f}", f"{c.accuracy:.3f}",
                     f"{c.delta:+.3f}", str(c.b), str(c.c), f"{c.p_value:.4g}", c.verdict])
    return rows


def render_comparison(comparisons: Sequence[Comparison], baseline: Path | str, *, fmt: str = "simple") -> str:
    from tabulate import tabulate

    alpha = comparisons[0].alpha if comparisons else DEFAULT_ALPHA
    head = (f"Against baseline {baseline} (paired on shared sample ids; exact McNemar test; "
            f"regression = accuracy drop with p < {alpha:g}; b = right before, wrong now)")
    return head + "\n" + tabulate(comparison_rows(comparisons), headers=COMPARISON_HEADERS,
                                  tablefmt=fmt, disable_numparse=True)


# -- every pair of cases in one run ---------------------------------------------------------
PAIR_HEADERS = ["A", "B", "n shared", "acc A", "acc B", "Δacc (B-A)", "b", "c", "McNemar p", "Holm p", "verdict"]


@dataclass(frozen=True)
class Pair:
    """Two cases of one run on the same task and sample (prompt A vs B, model X vs Y).
    ``b``: right in A and wrong in B; ``c``: the reverse; ``p_holm``: Holm-corrected
    across all the run's pairs."""

    a: str
    b_case: str
    n_shared: int
    accuracy_a: float
    accuracy_b: float
    b: int
    c: int
    p_value: float
    p_holm: float
    alpha: float = DEFAULT_ALPHA

    @property
    def delta(self) -> float:
        return self.accuracy_b - self.accuracy_a

    @property
    def verdict(self) -> str:
        if self.p_holm >= self.alpha:
            return "no significant difference"
        return f"{self.b_case} better" if self.delta > 0 else f"{self.a} better"

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b_case": self.b_case, "n_shared": self.n_shared, "accuracy_a": self.accuracy_a,
                "accuracy_b": self.accuracy_b, "delta": self.delta, "b": self.b, "c": self.c,
                "p_value": self.p_value, "p_holm": self.p_holm, "alpha": self.alpha, "verdict": self.verdict}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def pairwise(results: Sequence[Any], *, alpha: float = DEFAULT_ALPHA) -> list[Pair]:
    """Every pair of cases on the same task and the same sample (``sample_sha256``), paired on
    their shared sample ids with the exact McNemar test, Holm-corrected across the pairs."""
    raw: list[tuple[str, str, int, float, float, int, int, float]] = []
    for i, x in enumerate(results):
        for y in results[i + 1:]:
            if x.task != y.task or not x.sample_sha256 or x.sample_sha256 != y.sample_sha256:
                continue
            right_x, right_y = _correct(x.predictions), _correct(y.predictions)
            shared = [s for s in right_x if s in right_y]
            if not shared:
                continue
            b = sum(1 for s in shared if right_x[s] and not right_y[s])
            c = sum(1 for s in shared if right_y[s] and not right_x[s])
            n = len(shared)
            raw.append((x.case_id, y.case_id, n, sum(right_x[s] for s in shared) / n,
                        sum(right_y[s] for s in shared) / n, b, c, mcnemar_exact(b, c)))
    adjusted = holm([r[7] for r in raw])
    return [Pair(*r, p_holm=p, alpha=alpha) for r, p in zip(raw, adjusted)]


def pair_rows(pairs: Iterable[Pair]) -> list[list[str]]:
    return [[p.a, p.b_case, str(p.n_shared), f"{p.accuracy_a:.3f}", f"{p.accuracy_b:.3f}", f"{p.delta:+.3f}",
             str(p.b), str(p.c), f"{p.p_value:.4g}", f"{p.p_holm:.4g}", p.verdict] for p in pairs]
