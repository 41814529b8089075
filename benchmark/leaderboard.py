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

from benchmark.metrics import Scores, fail_probability, merge_predictions, predictions_from_confusion, score
from benchmark.resources import builtin_path
from benchmark.results import RESULTS_SCHEMA, CaseResult

PUBLISHED = builtin_path("published.toml")

MEASURED_HEADERS = ["task", "model", "prompt", "n", "accuracy", "95% CI", "chance", "macro-F1",
                    "unparseable", "refused", "threshold", "result"]
# A threshold a model no better than chance passes this often (or more) is flagged as near chance.
NEAR_CHANCE = 0.05
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


def verdict(passed: bool | None, regression: bool = False) -> str:
    """pass / FAIL (threshold) / - (no threshold); a case the regression gate failed is
    "FAIL (regression)", or "FAIL (threshold, regression)" when it also missed its threshold."""
    if regression:
        return "FAIL (threshold, regression)" if passed is False else "FAIL (regression)"
    return {True: "pass", False: "FAIL", None: "-"}[passed]


def measured_cells(r: CaseResult, *, regression: bool = False) -> dict[str, str]:
    """One case's cells under :data:`MEASURED_HEADERS` (``regression``: the gate failed it)."""
    s = r.scores
    return {"task": r.task, "model": r.model, "prompt": r.prompt, "n": str(s.n), "accuracy": fmt_num(s.accuracy),
            "95% CI": f"{s.ci_low:.3f}-{s.ci_high:.3f}", "chance": fmt_num(s.chance_accuracy),
            "macro-F1": fmt_num(s.macro_f1),
            "unparseable": str(s.unparseable), "refused": str(s.refused), "threshold": fmt_num(r.threshold, 2),
            "result": verdict(r.passed, regression)}


def measured_rows(results: Iterable[CaseResult], regressions: Iterable[str] = ()) -> list[list[str]]:
    """The rows of the compact measured table (:data:`MEASURED_HEADERS`); ``regressions``:
    the ids of the cases the regression gate failed."""
    failed = set(regressions)
    return [[cells[h] for h in MEASURED_HEADERS]
            for cells in (measured_cells(r, regression=r.case_id in failed) for r in results)]


# -- thresholds against the reference -----------------------------------------------------
def _model_key(name: str) -> str:
    """A published row's model name as a config model name: "GPT-4o" -> "gpt-4o",
    "LLaVA-NeXT (llava-v1.6-mistral-7b, 4-bit)" -> "llava-next" (the words before the brackets)."""
    return name.split("(", 1)[0].strip().lower()


def reference_row(rows: Iterable[PublishedRow], task: str, model: str, model_id: str = "") -> PublishedRow | None:
    """The published row of ``task`` x the config model ``model`` (its name, or else its API
    model id, equal to the published model's name before any brackets, case aside); None if none."""
    rows = [p for p in rows if p.task == task]
    for key in (model, model_id):
        found = next((p for p in rows if key and _model_key(p.model) == key.strip().lower()), None)
        if found is not None:
            return found
    return None


def threshold_check(r: CaseResult, rows: Iterable[PublishedRow]) -> dict[str, Any] | None:
    """What the case's threshold can tell at its n; None for a case without a threshold.

    ``fail_probability``: P(Binomial(n, p_ref) / n < threshold), how often a model exactly
    as good as the reference fails the gate, with p_ref the published accuracy of this task x
    model (:func:`reference_row`), else the case's own measured accuracy (``reference`` says
    which). ``chance_pass_probability``: how often a model no better than the sample's chance
    (majority-class) accuracy passes it. ``warning``: the threshold is at or below chance, or
    so near it that such a model passes it at least :data:`NEAR_CHANCE` of the time.
    """
    if r.threshold is None:
        return None
    s, t = r.scores, float(r.threshold)
    ref = reference_row(rows, r.task, r.model, r.model_id)
    if ref is not None:
        p_ref, source = ref.accuracy, f"published: {ref.model}, {ref.source}"
    else:
        p_ref, source = s.accuracy, f"measured: this case's own accuracy (no published row for {r.task} x {r.model})"
    chance = float(s.chance_accuracy or 0.0)
    chance_pass = 1.0 - fail_probability(s.n, chance, t) if s.n else 0.0
    at_or_below = t <= chance + 1e-12
    warning = None
    if at_or_below:
        warning = f"threshold {t:g} is at or below chance {chance:.3f} for this sample: the gate proves nothing"
    elif chance_pass >= NEAR_CHANCE:
        warning = (f"threshold {t:g} is barely above chance {chance:.3f} for this sample: a model no better than "
                   f"chance passes it with probability {chance_pass:.3f} at n={s.n}, so the gate proves little")
    return {"threshold": t, "n": s.n, "reference_accuracy": p_ref, "reference": source,
            "fail_probability": fail_probability(s.n, p_ref, t),
            "chance_accuracy": chance, "chance_pass_probability": chance_pass,
            "at_or_below_chance": at_or_below, "warning": warning}


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
