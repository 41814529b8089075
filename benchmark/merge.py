"""Merge results files (``pytest cases --bench-results X.json``) into one leaderboard.

A case is (task, model, prompt). The same case in several files is kept once
when the runs are identical (same sample and prompt digests, same model id,
same predictions); any other difference is a conflict, refused unless
``keep="newest"`` takes the run of the file with the latest ``created``.
Every kept case remembers the file it came from.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmark.core import BenchError
from benchmark.report import Report
from benchmark.results import RESULTS_SCHEMA, CaseResult

REQUIRED = ("case_id", "task", "model", "model_id", "prompt", "classes", "metrics", "predictions", "wall_s")


@dataclass
class ResultsFile:
    path: Path
    created: str | None
    cases: list[tuple[CaseResult, dict[str, Any]]]  # the result and its JSON
    config_sources: list[str] = field(default_factory=list)
    provenance: dict[str, Any] | None = None  # what produced the run (benchmark.provenance), if it says
    gate: bool = False  # the run's regression gate was on (--bench-fail-on-regression)

    @property
    def when(self) -> datetime | None:
        """``created`` as an aware datetime (naive means UTC); None if missing or unreadable."""
        try:
            t = datetime.fromisoformat(str(self.created))
        except ValueError:
            return None
        return t if t.tzinfo else t.replace(tzinfo=UTC)


def load_results(path: Path | str) -> ResultsFile:
    """Read and check one results file; a BenchError names the file and what is wrong."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"{path}: file not found; expected a results JSON "
                         f"(pytest cases --bench-results PATH)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BenchError(f"{path}: expected a results JSON, found unreadable or invalid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != RESULTS_SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise BenchError(f"{path}: expected schema {RESULTS_SCHEMA!r}, found {found!r}")
    if not isinstance(doc.get("cases"), list):
        raise BenchError(f"{path}: expected 'cases' as a list, found {type(doc.get('cases')).__name__}")
    cases = []
    for i, data in enumerate(doc["cases"]):
        missing = [k for k in REQUIRED if k not in data] if isinstance(data, dict) else list(REQUIRED)
        preds = data.get("predictions") if isinstance(data, dict) else None
        if not missing and not (isinstance(preds, list) and all(
                isinstance(p, dict) and {"sample_id", "true", "parsed"} <= p.keys() for p in preds)):
            missing = ["predictions with sample_id/true/parsed per sample"]
        try:
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            cases.append((CaseResult.from_json(data), data))
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchError(f"{path}: cases[{i}]: expected a case result ({', '.join(REQUIRED)}), "
                             f"found {type(exc).__name__}: {exc}") from None
    created = doc.get("created")
    return ResultsFile(path, created if isinstance(created, str) else None, cases,
                       [str(s) for s in doc.get("config_sources") or []],
                       provenance=doc.get("provenance") if isinstance(doc.get("provenance"), dict) else None,
                       gate=bool((doc.get("baseline") or {}).get("fail_on_regression")))


@dataclass
class Kept:
    """A case in the merged leaderboard and where it came from."""

    result: CaseResult
    data: dict[str, Any]
    source: ResultsFile
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # other files holding the case


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What makes two runs of one case different (empty: identical runs)."""
    out = []
    for key in ("sample_sha256", "prompt_sha256"):
        x, y = a.get(key) or None, b.get(key) or None
        if x and y and x != y:
            out.append(f"{key} {x[:12]}... vs {y[:12]}...")
        elif bool(x) != bool(y) and a["predictions"] != b["predictions"]:
            out.append(f"{key} recorded in only one file")
    if a["model_id"] != b["model_id"]:
        out.append(f"model_id {a['model_id']!r} vs {b['model_id']!r}")
    if (a.get("shots") or None) != (b.get("shots") or None):
        out.append("few-shot examples differ")
    pa, pb = a["predictions"], b["predictions"]
    if pa != pb:
        ids_a = {p["sample_id"]: p for p in pa}
        ids_b = {p["sample_id"]: p for p in pb}
        if ids_a.keys() != ids_b.keys():
            out.append(f"sample ids differ ({len(pa)} vs {len(pb)} samples, {len(ids_a.keys() & ids_b.keys())} shared)")
        else:
            n = sum(ids_a[k] != ids_b[k] for k in ids_a)
            out.append(f"predictions differ on {n} of {len(pa)} samples" if n else "samples in another order")
    return out


def merge(files: Sequence[ResultsFile], *, keep: str | None = None) -> tuple[list[Kept], list[str]]:
    """One entry per (task, model, prompt), in first-seen order, and notes on what was dropped."""
    if keep not in (None, "newest"):
        raise BenchError(f"expected keep None or 'newest', found {keep!r}")
    kept: dict[tuple[str, str, str], Kept] = {}
    notes: list[str] = []
    for f in files:
        for result, data in f.cases:
            key = (result.task, result.model, result.prompt)
            old = kept.get(key)
            if old is None:
                kept[key] = Kept(result, data, f)
                continue
            case = f"case {result.case_id} (task {key[0]}, model {key[1]}, prompt {key[2]})"
            diff = differences(old.data, data)
            if not diff:
                old.duplicates.append({"source_file": str(f.path), "source_created": f.created,
                                       "status": "identical"})
                continue
            what = "; ".join(diff)
            if keep is None:
                raise BenchError(f"{case} is in {old.source.path} and {f.path} from incompatible runs ({what}); "
                                 f"merge only one of them, or pass --keep newest to take the run of the newest file")
            undated = [x.path for x in (old.source, f) if x.when is None]
            if undated:
                raise BenchError(f"{case} differs between {old.source.path} and {f.path} ({what}); --keep "
                                 f"newest expects a 'created' timestamp, found none readable in "
                                 f"{', '.join(map(str, undated))}")
            assert old.source.when is not None and f.when is not None
            newer = f.when >= old.source.when  # a tie goes to the file named later
            new, lost = (Kept(result, data, f), old) if newer else (old, Kept(result, data, f))
            if newer:  # files identical to the dropped run are dropped with it
                new.duplicates = [{**d, "status": "superseded", "differences": diff} for d in old.duplicates]
            new.duplicates.append({"source_file": str(lost.source.path), "source_created": lost.source.created,
                                   "status": "superseded", "differences": diff})
            kept[key] = new
            notes.append(f"note: {case} differs between {old.source.path} and {f.path} ({what}); kept "
                         f"{new.source.path} (newest, created {new.source.created}), dropped {lost.source.path} "
                         f"(created {lost.source.created})")
    return list(kept.values()), notes


@dataclass
class MergedReport(Report):
    """A Report whose outputs say which file each case came from."""

    kept: list[Kept] = field(default_factory=list)
    files: list[ResultsFile] = field(default_factory=list)

    @classmethod
    def from_files(cls, files: Sequence[ResultsFile], *, keep: str | None = None) -> tuple[MergedReport, list[str]]:
        kept, notes = merge(files, keep=keep)
        prices: dict[str, dict[str, float]] = {}
        for k in kept:  # the prices each run was costed with, as recorded in its file
            p = (k.data.get("summary") or {}).get("prices")
            if isinstance(p, dict):
                prices.setdefault(k.result.model, p)
        from benchmark.provenance import merge_provenance

        parts = [(str(f.path), f.provenance, [k.result.case_id for k in kept if k.source is f]) for f in files]
        return cls([k.result for k in kept], prices, kept=kept, files=list(files),
                   provenance=merge_provenance(parts)), notes

    def regression(self, case_id: str) -> bool:
        """True when the run a case came from had its regression gate fail it (kept as recorded:
        a merged leaderboard has no baseline of its own)."""
        k = next((k for k in self.kept if k.result.case_id == case_id), None)
        return k is not None and k.source.gate and k.data.get("regression") is True

    def _cases_from(self, f: ResultsFile) -> list[str]:
        return [k.result.case_id for k in self.kept if k.source is f]

    def sources(self) -> list[tuple[str, str, list[str]]]:
        """Per input file: path, created, the case ids taken from it."""
        return [(str(f.path), f.created or "-", self._cases_from(f)) for f in self.files]

    def sources_text(self) -> str:
        lines = [f"Merged from {len(self.files)} results file(s):"]
        for path, created, cases in self.sources():
            lines.append(f"  {path} (created {created}): {', '.join(cases) or 'no case kept'}")
        return "\n".join(lines)

    def document(self, *, sources: Sequence[Path] = ()) -> dict[str, Any]:
        doc = super().document(sources=sources)
        doc["config_sources"] = list(dict.fromkeys([*doc["config_sources"],
                                                    *(s for f in self.files for s in f.config_sources)]))
        doc["merged_from"] = [{"path": p, "created": c, "cases": ids} for p, c, ids in self.sources()]
        for case, k in zip(doc["cases"], self.kept):
            case.update(source_file=str(k.source.path), source_created=k.source.created)
            if "regression" in k.data:  # as the run's own baseline comparison found it
                case.update(regression=k.data["regression"], passed=self.passed(k.result))
            if k.duplicates:
                case["duplicates"] = k.duplicates
        return doc

    def markdown(self) -> str:
        rows = [f"- `{p}` (created {c}): {', '.join(f'`{i}`' for i in ids) or 'no case kept'}"
                for p, c, ids in self.sources()]
        return super().markdown() + "\n## Sources\n\n" + "\n".join(rows) + "\n"

    def html(self, *, title: str = "astrobench leaderboard", extra: Sequence[str] = ()) -> str:
        items = "".join(f"<li><code>{html.escape(p)}</code> (created {html.escape(c)}): "
                        f"{html.escape(', '.join(ids) or 'no case kept')}</li>" for p, c, ids in self.sources())
        return super().html(title=title, extra=[f"<h2>Sources</h2>\n<ul class=\"sources\">{items}</ul>", *extra])
