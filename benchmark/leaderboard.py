"""The data of a leaderboard: the published reference rows (``published.toml``),
the cells of a measured or published row, and the results JSON document.

Rendering (terminal table, detail, Markdown, HTML) is :class:`benchmark.report.Report`'s;
this module holds no layout beyond how one number or one row is written.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from benchmark.metrics import Scores, merge_predictions, predictions_from_confusion, score
from benchmark.resources import builtin_path
from benchmark.results import RESULTS_SCHEMA, CaseResult

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


class Published(NamedTuple):
    """``published.toml``: the citation and the rows (unpacks as ``citation, rows``)."""

    citation: str
    rows: tuple[PublishedRow, ...]


def load_published(path: Path | str = PUBLISHED) -> Published:
    """The citation and the published rows; metrics from confusion matrices where given.

    Each file is parsed once per process; every call for it returns the same (immutable) object.
    """
    return _parse_published(Path(path).resolve())


@functools.cache
def _parse_published(path: Path) -> Published:
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
    return Published(data["citation"], tuple(rows))


# -- cells ---------------------------------------------------------------------------
def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number for a table; "-" when there is none."""
    return "-" if x is None else f"{x:.{digits}f}"


def verdict(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "-"}[passed]


def measured_cells(r: CaseResult) -> dict[str, str]:
    """One case's cells under :data:`MEASURED_HEADERS`."""
    s = r.scores
    return {"task": r.task, "model": r.model, "prompt": r.prompt, "n": str(s.n), "accuracy": fmt_num(s.accuracy),
            "95% CI": f"{s.ci_low:.3f}-{s.ci_high:.3f}", "macro-F1": fmt_num(s.macro_f1),
            "unparseable": str(s.unparseable), "refused": str(s.refused), "threshold": fmt_num(r.threshold, 2),
            "result": verdict(r.passed)}


def measured_rows(results: Iterable[CaseResult]) -> list[list[str]]:
    """The rows of the compact measured table (:data:`MEASURED_HEADERS`)."""
    return [[cells[h] for h in MEASURED_HEADERS] for cells in map(measured_cells, results)]


def published_rows(rows: Iterable[PublishedRow], tasks: set[str] | None = None) -> list[list[str]]:
    """The rows of the published table (:data:`PUBLISHED_HEADERS`), only ``tasks`` if given."""
    out = []
    for p in rows:
        if tasks is not None and p.task not in tasks:
            continue
        s = p.scores
        out.append([p.task, p.model, str(s.n) if s else "500", fmt_num(p.accuracy),
                    f"{s.ci_low:.3f}-{s.ci_high:.3f}" if s else "-",
                    fmt_num(s.macro_f1) if s else "-", f"published: {p.source}"])
    return out


# -- the results JSON -------------------------------------------------------------------
def results_document(results: Sequence[CaseResult], *, sources: Sequence[Path] = (),
                     published: Path | Published = PUBLISHED) -> dict[str, Any]:
    """The results JSON (schema :data:`~benchmark.results.RESULTS_SCHEMA`): cases with their
    per-sample predictions, and the published rows (``published``: a path, or rows already loaded)."""
    citation, pub = published if isinstance(published, Published) else load_published(published)
    return {
        "schema": RESULTS_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config_sources": [str(s) for s in sources],
        "cases": [r.to_json() for r in results],
        "published": {
            "citation": citation,
            "rows": [{"task": p.task, "model": p.model, "accuracy": p.accuracy, "source": p.source,
                      "metrics": p.scores.to_json() if p.scores else None} for p in pub],
        },
    }


def results_from_document(doc: dict[str, Any]) -> list[CaseResult]:
    """CaseResults back from a results JSON document (inverse of :func:`results_document`)."""
    return [CaseResult.from_json(c) for c in doc["cases"]]


def render_text(results: Sequence[CaseResult], *, published: Path = PUBLISHED, fmt: str = "simple") -> str:
    """The end-of-session leaderboard table: :meth:`benchmark.report.Report.text` of ``results``."""
    from benchmark.report import Report  # the renderer; report imports this module

    return Report(list(results), published=published).text(fmt=fmt)
