"""Leaderboard rendering: measured rows, published reference rows, JSON."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmark.metrics import Scores, merge_predictions, predictions_from_confusion, score
from benchmark.resources import builtin_path

PUBLISHED = builtin_path("published.toml")

MEASURED_HEADERS = ["task", "model", "prompt", "n", "accuracy", "95% CI", "macro-F1",
                    "unparseable", "refused", "threshold", "result"]
PUBLISHED_HEADERS = ["task", "model", "n", "accuracy", "95% CI", "macro-F1", "source"]


@dataclass(frozen=True)
class PublishedRow:
    task: str
    model: str
    accuracy: float
    source: str
    scores: Scores | None = None  # when a confusion matrix was published


def load_published(path: Path = PUBLISHED) -> tuple[str, list[PublishedRow]]:
    """The citation and the published rows; metrics from confusion matrices where given."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    matrices: dict[tuple[str, str], list[list[int]]] = {}
    rows: list[PublishedRow] = []
    for row in data.get("rows", []):
        confusion = row.get("confusion")
        if confusion is None and "derived_from_confusion" in row:
            confusion = matrices[(row["derived_from_confusion"], row["model"])]
        if confusion is not None:
            matrices[(row["task"], row["model"])] = confusion
            y_true, y_pred = predictions_from_confusion(confusion)
            n_classes = len(confusion)
            if "merge" in row:
                mapping: dict[int, int] = {o: n for n, g in enumerate(row["merge"]) for o in g}
                y_true, y_pred = merge_predictions(y_true, y_pred, [mapping[i] for i in range(n_classes)])
                n_classes = len(row["merge"])
            s = score(y_true, y_pred, n_classes)
            rows.append(PublishedRow(row["task"], row["model"], s.accuracy, row["source"], s))
        else:
            rows.append(PublishedRow(row["task"], row["model"], float(row["accuracy"]), row["source"]))
    return data["citation"], rows


def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number for a table; "-" when there is none."""
    return "-" if x is None else f"{x:.{digits}f}"


def verdict(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "-"}[passed]


def measured_rows(results: Iterable[Any]) -> list[list[str]]:
    rows = []
    for r in results:
        s = r.scores
        rows.append([r.task, r.model, r.prompt, str(s.n), fmt_num(s.accuracy),
                     f"{s.ci_low:.3f}-{s.ci_high:.3f}", fmt_num(s.macro_f1), str(s.unparseable),
                     str(s.refused),
                     fmt_num(r.threshold, 2), verdict(r.passed)])
    return rows


def published_rows(rows: Iterable[PublishedRow], tasks: set[str] | None = None) -> list[list[str]]:
    out = []
    for p in rows:
        if tasks is not None and p.task not in tasks:
            continue
        s = p.scores
        out.append([p.task, p.model, str(s.n) if s else "500", fmt_num(p.accuracy),
                    f"{s.ci_low:.3f}-{s.ci_high:.3f}" if s else "-",
                    fmt_num(s.macro_f1) if s else "-", f"published: {p.source}"])
    return out


def render_text(results: Sequence[Any], *, published: Path = PUBLISHED, fmt: str = "simple") -> str:
    """The end-of-session leaderboard: measured table, then published table."""
    from tabulate import tabulate

    citation, pub = load_published(published)
    tasks = {r.task for r in results}
    parts = ["Measured (accuracy counts unparseable answers and refusals as wrong; 95% CI: Wilson)",
             tabulate(measured_rows(results), headers=MEASURED_HEADERS, tablefmt=fmt,
                      disable_numparse=True)]
    ref = published_rows(pub, tasks)
    if ref:
        parts += ["", f"Published reference rows (not measured here): {citation}",
                  tabulate(ref, headers=PUBLISHED_HEADERS, tablefmt=fmt, disable_numparse=True)]
    return "\n".join(parts)


def results_document(results: Sequence[Any], *, sources: Sequence[Path] = (),
                     published: Path = PUBLISHED) -> dict[str, Any]:
    citation, pub = load_published(published)
    return {
        "schema": "astrobench-results/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config_sources": [str(s) for s in sources],
        "cases": [r.to_json() for r in results],
        "published": {
            "citation": citation,
            "rows": [{"task": p.task, "model": p.model, "accuracy": p.accuracy, "source": p.source,
                      "metrics": p.scores.to_json() if p.scores else None} for p in pub],
        },
    }
