"""The leaderboard report: one :class:`Report` per run, built once, and every output
rendered from it: the terminal table, the per-case detail, Markdown, a self-contained
HTML page with confusion-matrix heatmaps (and, with class probabilities, inline SVG
reliability diagrams and ROC / precision-recall curves), and the results JSON with
per-case summaries.

The data (published rows, row cells, the results document) is :mod:`benchmark.leaderboard`'s.
Every number is computed from ``CaseResult`` objects (or a results JSON read back with
``CaseResult.from_json``), so a report can be rebuilt offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from benchmark.compare import (COMPARISON_HEADERS, PAIR_HEADERS, Baseline, Comparison, Pair, comparison_rows,
                               pair_rows, pairwise, render_comparison)
from benchmark.core import BenchError, write_atomic
from benchmark.leaderboard import (MEASURED_HEADERS, PUBLISHED, PUBLISHED_HEADERS, Published, load_published,
                                   measured_cells, measured_rows, published_rows, results_document,
                                   threshold_check)
from benchmark.leaderboard import fmt_num as _f
from benchmark.leaderboard import results_from_document  # noqa: F401  (re-exported for callers)
from benchmark.metrics import calibration, estimate_cost, roc_auc, row_normalised
from benchmark.permute import describe as describe_permutation
from benchmark.results import CaseResult, Prediction
from benchmark.svg import Chart

if TYPE_CHECKING:
    from benchmark.config import BenchConfig

PAIR_NOTE = ("same task and sample, paired on sample ids; exact McNemar; b = right in A and wrong in B, "
             "c = the reverse; Holm-corrected across all pairs of the run")
CI_NOTE = ("accuracy counts unparseable answers and refusals as wrong; 95% CI: Wilson score interval; "
           "chance: the majority-class share of the sample")
FULL_HEADERS = ["task", "model", "prompt", "n", "accuracy", "95% CI", "chance", "balanced acc", "kappa",
                "acc parsed", "no class", "macro-F1", "ROC-AUC", "AP",
                "unparseable", "refused", "tokens in", "tokens out", "cost USD", "wall s", "img/s", "cached",
                "threshold", "P(fail) at ref", "result", "served model", "method"]
PER_CLASS_HEADERS = ["class", "precision", "recall", "F1", "support"]
SHOT_HEADERS = ["example", "class"]
SHOTS_NOTE = ("labelled example images sent before every image of the case, drawn from the dataset beyond "
              "the sample (never a sample image)")
PERMUTATION_HEADERS = ["case", "shifts", "accuracy per shift", "mean", "consistent acc", "numbers answered"]
PERMUTATION_NOTE = ("permute_labels: every image asked under each cyclic renumbering of the classes (shift s "
                    "shows class k as (k + s) mod n), answers mapped back; consistent acc = right under every "
                    "shift; numbers answered = share of all answers giving each shown number; the case's other "
                    "numbers are shift 0's")
SHIFT_HEADERS = ["shift", "class -> number shown", "accuracy"]
COLUMN_HELP = {
    "served model": "the model id the API said it served (response.model); for local models, id@weights commit",
    "method": "how answers became classes: parser, extract (extractor model), score",
    "n": "samples scored",
    "accuracy": "correct / n (unparseable and refused = wrong)",
    "95% CI": "Wilson score interval on accuracy",
    "chance": "majority-class share of the sample: the accuracy of always giving the commonest class",
    "balanced acc": "mean per-class recall (unparseable and refused = wrong)",
    "kappa": "Cohen's kappa; an answer with no class is a category of its own that never agrees",
    "acc parsed": "correct / answers with a class (unparseable and refused left out)",
    "no class": "share of answers with no class: (unparseable + refused) / n",
    "macro-F1": "unweighted mean of per-class F1",
    "ROC-AUC": "from class probabilities (one-vs-rest macro for >2 classes); - when the model gives none",
    "AP": "average precision of class 1 from P(class 1) (two classes only); - when the model gives no probabilities",
    "unparseable": "answers the parser could not map to a class",
    "refused": "answers in which the model declined to classify (an API refusal)",
    "tokens in": "prompt tokens, summed over the case",
    "tokens out": "completion tokens, summed over the case",
    "cost USD": "tokens x models.<name>.prices (per million tokens; answers that came by batch x prices.batch); "
                "- without prices",
    "wall s": "wall time to get the answers (cached answers take ~0 s)",
    "img/s": "n / wall s",
    "cached": "answers replayed from the case's recording, not asked live",
    "threshold": "minimum accuracy from [thresholds]",
    "P(fail) at ref": "P(Binomial(n, p_ref) / n < threshold): how often a model as good as the reference fails",
    "result": "pass / FAIL against the threshold; FAIL (regression): failed by the regression gate; "
              "- when neither applies",
}


@dataclass
class Report:
    """What every renderer needs: results, prices, the baseline comparison and the published rows.

    Build it once per run (:meth:`build`) and render every output from it. ``reference`` is
    ``published`` as loaded; when not given, it is loaded on first use and kept.
    """

    results: list[CaseResult]
    prices: dict[str, dict[str, float]] = field(default_factory=dict)  # model name -> prices
    comparisons: list[Comparison] | None = None
    baseline: str | None = None
    published: Path = PUBLISHED
    reference: Published | None = None
    _summaries: dict[int, dict[str, Any]] = field(default_factory=dict, init=False, repr=False, compare=False)
    tasks: dict[str, str] = field(default_factory=dict)  # task name -> its description (config)
    fail_on_regression: bool = False  # the regression gate failed the cases whose comparison is a regression
    skipped: list[dict[str, str]] = field(default_factory=list)  # cases not run: case_id, task, reason
    provenance: dict[str, Any] | None = None  # what produced this run (benchmark.provenance.collect)
    baseline_provenance: dict[str, Any] | None = None  # what produced the baseline run, if it says
    alpha: float = 0.05  # significance level of the comparisons
    _pairs: list[Pair] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, results: Sequence[CaseResult], *, config: BenchConfig | None = None,
              baseline: Baseline | None = None, alpha: float = 0.05, published: Path = PUBLISHED,
              fail_on_regression: bool = False, skipped: Sequence[dict[str, str]] = ()) -> Report:
        """The report of ``results``: prices from ``config``, comparisons against ``baseline``
        (``fail_on_regression``: a regression fails the case, as ``--bench-fail-on-regression``),
        the published rows, read here once, and the ``skipped`` cases with what they miss."""
        prices: dict[str, dict[str, float]] = {}
        if config is not None:
            prices = {name: m.settings["prices"] for name, m in config.models.items()
                      if isinstance(m.settings.get("prices"), dict)}
        comparisons = [baseline.compare(r, alpha=alpha) for r in results] if baseline else None
        tasks = {name: t.description for name, t in config.tasks.items() if t.description} if config else {}
        return cls(list(results), prices, comparisons, str(baseline.path) if baseline else None, published,
                   load_published(published), tasks, fail_on_regression=bool(fail_on_regression and baseline),
                   skipped=[dict(x) for x in skipped],
                   baseline_provenance=baseline.provenance if baseline else None, alpha=alpha)

    def baseline_differences(self) -> list[str] | None:
        """What differs between the baseline's run and this one that matters for comparing them
        (:func:`benchmark.provenance.differences`); None when either run records no provenance."""
        if self.provenance is None or self.baseline_provenance is None:
            return None
        from benchmark.provenance import differences

        return differences(self.baseline_provenance, self.provenance)

    def published_table(self) -> Published:
        """The published citation and rows, loaded once per Report."""
        if self.reference is None:
            self.reference = load_published(self.published)
        return self.reference

    def summary(self, r: CaseResult) -> dict[str, Any]:
        """Per-case numbers beyond ``Scores``: ROC-AUC, tokens, cost, throughput, merges; worked
        out once per case (every output asks for them)."""
        if id(r) not in self._summaries:
            self._summaries[id(r)] = self._summary(r)
        return self._summaries[id(r)]

    def _summary(self, r: CaseResult) -> dict[str, Any]:
        s = r.scores
        probs = [p.get("probs") for p in r.predictions]
        usage = r.usage or {}
        merged = [{"task": m.task, "accuracy": m.scores.accuracy} for m in self.results
                  if m.derived_from == r.task and m.model == r.model and m.prompt == r.prompt]
        return {
            "roc_auc": roc_auc([p["true"] for p in r.predictions], probs, len(r.classes)),
            "calibration": calibration([p["true"] for p in r.predictions], probs, len(r.classes)),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "cost_usd": estimate_cost(usage, self.prices.get(r.model)),
            "prices": self.prices.get(r.model),
            "wall_s": r.wall_s,
            "images_per_s": s.n / r.wall_s if r.wall_s > 0 else None,
            "cached": r.cached,
            "confusion_row_normalised": row_normalised(s.confusion, s.unparseable_by_class),
            "merged_accuracy": merged,
            "mode_agreement": _mode_agreement(r.predictions),
            "threshold_check": threshold_check(r, self.published_table().rows),
        }

    def comparison(self, case_id: str) -> Comparison | None:
        return next((c for c in self.comparisons or [] if c.case_id == case_id), None)

    def regression(self, case_id: str) -> bool:
        """True when the regression gate failed this case (a significant drop, gate on)."""
        c = self.comparison(case_id)
        return self.fail_on_regression and c is not None and c.regression

    def regressions(self) -> list[str]:
        return [r.case_id for r in self.results if self.regression(r.case_id)]

    def passed(self, r: CaseResult) -> bool | None:
        """The case's outcome: its threshold's, and False when the regression gate failed it."""
        return False if self.regression(r.case_id) else r.passed

    def threshold_warnings(self) -> list[str]:
        """One line per case whose threshold is at or near the sample's chance accuracy."""
        return [f"{r.case_id}: {w}" for r in self.results
                if (w := (self.summary(r)["threshold_check"] or {}).get("warning"))]

    def measured_tasks(self) -> set[str]:
        """The tasks measured or skipped in this run (their published rows are shown)."""
        return {r.task for r in self.results} | {x["task"] for x in self.skipped if x.get("task")}

    # -- tables ---------------------------------------------------------------
    def headers(self) -> list[str]:
        """The full table's headers (Markdown, HTML): :data:`FULL_HEADERS`, then the baseline's."""
        return FULL_HEADERS + (["Δacc", "McNemar p", "vs baseline"] if self.comparisons is not None else [])

    def rows(self) -> list[list[str]]:
        """The full table's rows, under :meth:`headers`."""
        rows = []
        for r in self.results:
            x = self.summary(r)
            s, check = r.scores, x["threshold_check"]
            pr = (x["calibration"] or {}).get("pr")
            cells = {**measured_cells(r, regression=self.regression(r.case_id)), "ROC-AUC": _f(x["roc_auc"]),
                     "AP": _f(pr["average_precision"]) if pr else "-",
                     "balanced acc": _f(s.balanced_accuracy), "kappa": _f(s.kappa),
                     "acc parsed": _f(s.parsed_accuracy), "no class": _f(s.no_class_rate),
                     "served model": r.served_model or "-", "method": r.method or "-",
                     "P(fail) at ref": _f(check["fail_probability"]) if check else "-",
                     "tokens in": _count(x["prompt_tokens"]), "tokens out": _count(x["completion_tokens"]),
                     "cost USD": _f(x["cost_usd"], 4), "wall s": _f(r.wall_s, 2),
                     "img/s": _f(x["images_per_s"], 1), "cached": str(x["cached"])}
            row = [cells[h] for h in FULL_HEADERS]
            if self.comparisons is not None:
                c = self.comparison(r.case_id)
                if c is None or c.status != "compared":
                    row += ["-", "-", c.verdict if c else "-"]
                else:
                    row += [f"{c.delta:+.3f}", f"{c.p_value:.4g}", c.verdict]
            rows.append(row)
        return rows

    def published_rows(self) -> tuple[str, list[list[str]]]:
        """The citation and the published rows of the tasks measured here."""
        citation, pub = self.published_table()
        return citation, published_rows(pub, self.measured_tasks())

    # -- outputs ----------------------------------------------------------------
    def pairs(self) -> list[Pair]:
        """Every pair of cases on the same task and sample (prompt A vs B, model X vs Y, e.g. the
        paper's gpt-4o snapshot vs gpt-4o-current): exact McNemar, Holm-corrected across pairs."""
        if self._pairs is None:
            self._pairs = pairwise(self.results, alpha=self.alpha)
        return self._pairs

    def _case_extras(self, r: CaseResult) -> list[str]:
        """Lines beyond the scores: repeats, calibration and live traffic, when the case has them."""
        out = _traffic_lines(r.traffic)
        if r.repeats:
            rp = r.repeats
            out.append(f"repeats: {rp['n']}, accuracy mean {rp['mean']:.3f} +- {rp['sd']:.3f} (sd), "
                       f"majority vote {r.scores.accuracy:.3f}")
        if r.permutation:
            out += describe_permutation(r.permutation)
        cal = self.summary(r)["calibration"]
        if cal:
            line = f"calibration: Brier {cal['brier']:.4f}, ECE {cal['ece']:.4f} ({cal['ece_bins']} bins)"
            if "best_threshold" in cal:
                t = cal["best_threshold"]
                t = "above every score (nothing class 1)" if t is None else f"{t:.3f}"
                line += (f"; best threshold on P(class 1) {t} gives accuracy "
                         f"{cal['best_threshold_accuracy']:.3f} (tuned on this sample, not a fair score)")
            if cal.get("pr"):
                pr = cal["pr"]
                line += (f"; average precision {pr['average_precision']:.3f} (positive class 1, {r.classes[1]}; "
                         f"prevalence {pr['prevalence']:.3f})")
            out.append(line)
        return out

    def _pair_matrices(self, pairs: Sequence[Pair]) -> list[str]:
        """One matrix per task: cell (row, column) = Δaccuracy of row minus column (Holm p)."""
        tables = []
        tasks = {r.case_id: r.task for r in self.results}
        for task in dict.fromkeys(tasks[p.a] for p in pairs):
            cases = [r.case_id for r in self.results if r.task == task
                     and any(r.case_id in (p.a, p.b_case) for p in pairs)]
            cell = {}
            for p in pairs:
                if tasks[p.a] == task:
                    cell[(p.b_case, p.a)] = f"{p.delta:+.3f} ({p.p_holm:.3g})"
                    cell[(p.a, p.b_case)] = f"{-p.delta:+.3f} ({p.p_holm:.3g})"
            rows = [[row, *[cell.get((row, col), "" if row == col else "-") for col in cases]] for row in cases]
            tables.append(_html_table([task, *cases], rows, f"pairs-{task}"))
        return tables

    def text(self, *, fmt: str = "simple") -> str:
        """The end-of-session terminal leaderboard: the compact measured table, the published
        reference rows with the citation, then the baseline comparison when there is one."""
        if self.results:
            parts = ["Measured (accuracy counts unparseable answers and refusals as wrong; 95% CI: Wilson; "
                     "chance: majority-class share of the sample)",
                     tabulate(measured_rows(self.results, self.regressions()), headers=MEASURED_HEADERS,
                              tablefmt=fmt, disable_numparse=True)]
            parts += [f"warning: {w}" for w in self.threshold_warnings()]
            if any(r.permutation for r in self.results):
                parts += ["", f"Label order ({PERMUTATION_NOTE})",
                          tabulate(permutation_rows(self.results), headers=PERMUTATION_HEADERS, tablefmt=fmt,
                                   disable_numparse=True)]
        else:
            parts = ["Measured: nothing in this run (every case was skipped; what each one needs is listed below)"]
        citation, pub = self.published_rows()
        if pub:
            parts += ["", f"Published reference rows (not measured here): {citation}",
                      tabulate(pub, headers=PUBLISHED_HEADERS, tablefmt=fmt, disable_numparse=True)]
        if self.comparisons is not None:
            parts += ["", render_comparison(self.comparisons, self.baseline or "", fmt=fmt)]
        pairs = self.pairs()
        if pairs:
            parts += ["", f"Cases against each other ({PAIR_NOTE})",
                      tabulate(pair_rows(pairs), headers=PAIR_HEADERS, tablefmt=fmt, disable_numparse=True)]
        if self.skipped:
            parts += ["", "Skipped cases (not measured): what is missing and the command that gets it"]
            parts += [f"  {x['case_id']}: {x['reason']}" for x in self.skipped]
        return "\n".join(parts)

    def document(self, *, sources: Sequence[Path] = ()) -> dict[str, Any]:
        """The results JSON: cases with per-sample predictions, plus summaries and the baseline."""
        doc = results_document(self.results, sources=sources, published=self.published_table())
        for case, r in zip(doc["cases"], self.results):
            case["summary"] = self.summary(r)
            if self.comparisons is not None:  # detected; it fails the case only with the gate on
                c = self.comparison(r.case_id)
                case["regression"] = bool(c is not None and c.regression)
                case["passed"] = self.passed(r)
        if self.comparisons is not None:
            doc["baseline"] = {"path": self.baseline, "fail_on_regression": self.fail_on_regression,
                               "comparisons": [c.to_json() for c in self.comparisons],
                               "differences": self.baseline_differences()}
        if self.skipped:
            doc["skipped"] = [dict(x) for x in self.skipped]
        pairs = self.pairs()
        if pairs:
            doc["pairs"] = [c.to_json() for c in pairs]
        if self.provenance is not None:
            doc["provenance"] = self.provenance
        return doc

    def detail(self) -> str:
        """Terminal detail: per case, per-class P/R/F1, confusion matrix, usage, timing."""
        out: list[str] = []
        for r in self.results:
            s, x = r.scores, self.summary(r)
            out += ["", f"{r.case_id}  (task {r.task}, model {r.model} = {r.model_id}, prompt {r.prompt}"
                        + (f", served {r.served_model}" if r.served_model else "")
                        + (f", method {r.method}" if r.method else "") + ")",
                    f"  accuracy {s.accuracy:.3f} (95% CI Wilson {s.ci_low:.3f}-{s.ci_high:.3f}), "
                    f"macro-F1 {s.macro_f1:.3f}, ROC-AUC {_f(x['roc_auc'])}, unparseable {s.unparseable}, refused {s.refused} of {s.n}"]
            kappa = "undefined" if s.kappa is None else f"{s.kappa:.3f}"
            majority = r.classes[s.support.index(max(s.support))] if s.support and s.n else "-"
            out.append(f"  chance {s.chance_accuracy:.3f} (always answering the majority class {majority!r}), "
                       f"balanced accuracy {s.balanced_accuracy:.3f}, Cohen's kappa {kappa} "
                       f"(an answer with no class is a category of its own)")
            parsed = "-" if s.parsed_accuracy is None else f"{s.parsed_accuracy:.3f}"
            out.append(f"  on the {s.n_parsed} answers with a class: accuracy {parsed}; "
                       f"{s.no_class_rate:.1%} of answers had no class (unparseable or refused)")
            out += self._threshold_lines(r, x["threshold_check"])
            if r.task in self.tasks:
                out.append(f"  task: {self.tasks[r.task]}")
            out += [f"  {line}" for line in self._case_extras(r)]
            if r.shots:
                out.append(f"  {_shots_note(r)}: " + ", ".join(f"{i} ({c})" for i, c in _shot_rows(r)))
            for m in x["merged_accuracy"]:
                out.append(f"  merged classes ({m['task']}): accuracy {m['accuracy']:.3f}")
            if x["mode_agreement"] is not None:
                out.append(f"  generate and score modes agree on {x['mode_agreement']:.3f} of the images")
            cost = "-" if x["cost_usd"] is None else f"${x['cost_usd']:.4f}"
            out.append(f"  tokens in {_count(x['prompt_tokens'])}, out {_count(x['completion_tokens'])}, "
                       f"estimated cost {cost}; wall {r.wall_s:.2f} s, {_f(x['images_per_s'], 1)} img/s, "
                       f"{x['cached']} of {s.n} answers from the cache")
            out.append(_indent(tabulate(_per_class_rows(r), headers=PER_CLASS_HEADERS, disable_numparse=True)))
            norm = x["confusion_row_normalised"]
            labels = [f"{i}:{c}" for i, c in enumerate(r.classes)]
            cm_rows = [[labels[i], *map(str, row), str(s.unparseable_by_class[i]),
                        *(f"{v:.2f}" for v in norm[i])] for i, row in enumerate(s.confusion)]
            heads = ["true \\ predicted", *map(str, range(len(r.classes))), "unparseable",
                     *(f"{i} (row %)" for i in range(len(r.classes)))]
            out += ["  confusion matrix: counts, then row-normalised (share of the true class)",
                    _indent(tabulate(cm_rows, headers=heads, disable_numparse=True))]
        return "\n".join(out).lstrip("\n")

    def _threshold_lines(self, r: CaseResult, check: dict[str, Any] | None) -> list[str]:
        """The detail view's lines on the threshold and the regression gate of one case."""
        out = []
        if check is not None:
            note = f" ({r.threshold_note})" if r.threshold_note else ""
            out.append(f"  threshold {check['threshold']:g}{note}: a model exactly as good as the reference "
                       f"(p_ref {check['reference_accuracy']:.3f}, {check['reference']}) fails it with "
                       f"probability {check['fail_probability']:.3f} at n={check['n']}")
            if check["warning"]:
                out.append(f"  WARNING: {check['warning']}")
        if self.regression(r.case_id):
            c = self.comparison(r.case_id)
            assert c is not None
            out.append(f"  FAILED by the regression gate: {c.describe()}")
        return out

    def _notes(self) -> list[str]:
        """Threshold warnings and regression failures, one line each (Markdown / HTML notes)."""
        return ([f"warning: {w}" for w in self.threshold_warnings()]
                + [f"{cid}: FAIL (regression): failed by the regression gate" for cid in self.regressions()])

    def markdown(self) -> str:
        """GitHub-flavoured Markdown: measured table, baseline table, published table."""
        parts = ["## Measured", "", f"_{CI_NOTE}._", "",
                 tabulate(self.rows(), headers=self.headers(), tablefmt="github", disable_numparse=True)]
        notes = self._notes()
        if notes:
            parts += ["", *(f"- {n}" for n in notes)]
        if any(r.permutation for r in self.results):
            parts += ["", "## Label order", "", f"_{PERMUTATION_NOTE}._", "",
                      tabulate(permutation_rows(self.results), headers=PERMUTATION_HEADERS, tablefmt="github",
                               disable_numparse=True)]
        if self.comparisons is not None:
            parts += ["", f"## Against baseline `{self.baseline}`", "",
                      "_Paired on shared sample ids; exact McNemar test; b = right in the baseline and "
                      "wrong now, c = the reverse._", "",
                      tabulate(comparison_rows(self.comparisons), headers=COMPARISON_HEADERS,
                               tablefmt="github", disable_numparse=True)]
        pairs = self.pairs()
        if pairs:
            parts += ["", "## Cases against each other", "", f"_{PAIR_NOTE}._", "",
                      tabulate(pair_rows(pairs), headers=PAIR_HEADERS, tablefmt="github", disable_numparse=True)]
        shot_rows = [[r.case_id, str(r.shots["k"]), str(r.shots["seed"]),
                      ", ".join(f"{i} ({c})" for i, c in _shot_rows(r))] for r in self.results if r.shots]
        if shot_rows:
            parts += ["", "## Few-shot examples", "", f"_{SHOTS_NOTE}._", "",
                      tabulate(shot_rows, headers=["case", "shots per class", "shot_seed", "examples (class)"],
                               tablefmt="github", disable_numparse=True)]
        citation, pub = self.published_rows()
        if pub:
            parts += ["", "## Published reference (not measured here)", "", f"Source: {citation}", "",
                      tabulate(pub, headers=PUBLISHED_HEADERS, tablefmt="github", disable_numparse=True)]
        return "\n".join(parts) + "\n"

    def html(self, *, title: str = "astrobench leaderboard", extra: Sequence[str] = ()) -> str:
        """One self-contained page: sortable tables, a confusion heatmap per case (and its
        :func:`probability_charts`), then the ``extra`` HTML blocks (e.g. the source files of
        a merged leaderboard)."""
        citation, pub = self.published_rows()
        body = [f"<h1>{_e(title)}</h1>", f"<p class=\"note\">{_e(CI_NOTE)}. Click a column header to sort.</p>",
                "<h2>Measured</h2>", _html_table(self.headers(), self.rows(), "measured", sortable=True,
                                                  help=COLUMN_HELP)]
        notes = self._notes()
        if notes:
            body.append("<ul class=\"notes\">" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
        if any(r.permutation for r in self.results):
            body += ["<h2>Label order</h2>", f"<p class=\"note\">{_e(PERMUTATION_NOTE)}.</p>",
                     _html_table(PERMUTATION_HEADERS, permutation_rows(self.results), "permutation", sortable=True)]
        if self.comparisons is not None:
            body += [f"<h2>Against baseline <code>{_e(self.baseline or '')}</code></h2>",
                     "<p class=\"note\">Paired on shared sample ids; exact McNemar test; b = right in the "
                     "baseline and wrong now, c = the reverse.</p>",
                     _html_table(COMPARISON_HEADERS, comparison_rows(self.comparisons), "baseline",
                                 sortable=True)]
        pairs = self.pairs()
        if pairs:
            body += ["<h2>Cases against each other</h2>", f"<p class=\"note\">{_e(PAIR_NOTE)}.</p>",
                     _html_table(PAIR_HEADERS, pair_rows(pairs), "pairs", sortable=True),
                     "<p class=\"note\">Matrix: row case minus column case, Δaccuracy (Holm p).</p>",
                     *self._pair_matrices(pairs)]
        if pub:
            body += ["<h2>Published reference (not measured here)</h2>",
                     f"<p class=\"citation\">{_e(citation)}</p>",
                     _html_table(PUBLISHED_HEADERS, pub, "published", row_class="published")]
        body.append("<h2>Per case</h2>")
        for i, r in enumerate(self.results):
            s = r.scores
            cal = self.summary(r)["calibration"]
            png = confusion_png(r.classes, s.confusion, s.unparseable_by_class,
                                title=f"{r.case_id}: accuracy {s.accuracy:.3f}")
            body += [f"<section class=\"case\" id=\"case-{_e(r.case_id)}\">",
                     f"<h3>{_e(r.case_id)}</h3>",
                     *([f"<p class=\"note\">{_e(self.tasks[r.task])}</p>"] if r.task in self.tasks else []),
                     *[f"<p class=\"note\">{_e(line.strip())}</p>" for line in self._case_extras(r)],
                     *([f"<p class=\"note\">{_e(_shots_note(r))}</p>",
                        _html_table(SHOT_HEADERS, _shot_rows(r), f"shots-{r.case_id}")] if r.shots else []),
                     f"<img alt=\"confusion matrix of {_e(r.case_id)}\" "
                     f"src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\">",
                     *([probability_charts(r, cal, chart_id=f"chart-{i}")] if cal else []),
                     _html_table(PER_CLASS_HEADERS, _per_class_rows(r), None),
                     *([_html_table(SHIFT_HEADERS, shift_rows(r.permutation), f"shifts-{r.case_id}")]
                       if r.permutation else []),
                     "</section>"]
        body += list(extra)
        return (f"<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
                + "\n".join(body) + f"\n<script>{_SORT_JS}</script>\n</body>\n</html>\n")

    def write(self, *, json_path: Path | None = None, md_path: Path | None = None,
              html_path: Path | None = None, sources: Sequence[Path] = ()) -> list[Path]:
        """Write the requested files (each atomically); return what was written.

        The results JSON comes first. Markdown and HTML are rendered and written
        independently; if either fails, the other files are still written and a
        :class:`BenchError` naming the failed file(s) is raised afterwards.
        """
        written = []
        if json_path:
            write_atomic(Path(json_path), json.dumps(self.document(sources=sources), indent=1) + "\n")
            written.append(Path(json_path))
        failed: list[tuple[Path, Exception]] = []
        for path, render in ((md_path, self.markdown), (html_path, self.html)):
            if path:
                path = Path(path)
                try:
                    write_atomic(path, render())
                except Exception as exc:  # any renderer bug: keep going, report below
                    failed.append((path, exc))
                else:
                    written.append(path)
        if failed:
            what = "; ".join(f"{p}: {type(e).__name__}: {e}" for p, e in failed)
            kept = f"; the results JSON was written completely to {json_path}" if json_path else ""
            raise BenchError(f"expected to write every report, found {len(failed)} that could not be "
                             f"rendered ({what}){kept}") from failed[0][1]
        return written


def confusion_png(classes: Sequence[str], confusion: Sequence[Sequence[int]],
                  unparseable_by_class: Sequence[int] | None = None, *, title: str = "") -> bytes:
    """Heatmap PNG: colours row-normalised, cells annotated with counts (matplotlib, no pyplot)."""
    import numpy as np
    from matplotlib.figure import Figure  # imported here: only HTML reports draw

    unp = list(unparseable_by_class or [0] * len(classes))
    counts = np.asarray(confusion, dtype=int)
    cols = list(classes)
    if any(unp):
        counts = np.column_stack([counts, unp])
        cols.append("unparseable")
    norm = np.asarray(row_normalised(counts))
    k, m = counts.shape
    fig = Figure(figsize=(0.95 * m + 2.5, 0.75 * k + 1.9), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(m):
            ax.text(j, i, f"{counts[i, j]}\n{norm[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if norm[i, j] > 0.55 else "black")
    # class names and case ids are shown as written: "$...$" is not mathtext
    ax.set_xticks(range(m), [_wrap(c) for c in cols], fontsize=8, rotation=30, ha="right",
                  parse_math=False)
    ax.set_yticks(range(k), [_wrap(c) for c in classes], fontsize=8, parse_math=False)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10, parse_math=False)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


CURVE, CHANCE, TUNED = "#0969da", "#6e7781", "#bc4c00"  # chart colours: the data, the reference, the tuned point


def probability_charts(r: CaseResult, cal: dict[str, Any], *, chart_id: str) -> str:
    """A case's class-probability views as inline SVG (:mod:`benchmark.svg`): the reliability
    diagram and, for two classes, the ROC and precision-recall curves of class 1 with the best
    threshold's point marked as tuned on the sample. ``cal``: :func:`benchmark.metrics.calibration`."""
    charts = [_reliability_chart(r, cal, f"{chart_id}-reliability")]
    if cal.get("roc") and cal.get("pr"):
        charts += [_roc_chart(r, cal, f"{chart_id}-roc"), _pr_chart(r, cal, f"{chart_id}-pr")]
    return '<div class="charts">' + "".join(charts) + "</div>"


def _reliability_chart(r: CaseResult, cal: dict[str, Any], chart_id: str) -> str:
    c = Chart(chart_id, f"Reliability diagram of {r.case_id}", "confidence (probability of the top class)",
              "accuracy", heading=f"Reliability (ECE {cal['ece']:.3f})",
              description=f"Accuracy of the top class per bin of its probability ({cal['ece_bins']} equal bins; "
                          f"bars, with a dot at the bin's mean confidence; the count is in each bar's tooltip) "
                          f"against the diagonal of perfect calibration; ECE {cal['ece']:.3f}, n = {r.scores.n}.")
    c.line([0.0, 1.0], [0.0, 1.0], colour=CHANCE, css="diagonal", label="perfectly calibrated", dashed=True)
    for b in cal["reliability"]:
        if b["count"]:
            tip = (f"confidence ({b['low']:g}, {b['high']:g}]: {b['count']} answers, mean confidence "
                   f"{b['confidence']:.3f}, accuracy {b['accuracy']:.3f}")
            c.bar(b["low"], b["high"], b["accuracy"], colour=CURVE, css="bin", tooltip=tip)
            c.point(b["confidence"], b["accuracy"], colour=CURVE, css="bin-mean", tooltip=tip, radius=3)
    c.key("accuracy per bin (dot: mean confidence)", CURVE, "dot")
    return c.render()


def _drawn(kept: int, points: int) -> str:
    return "" if kept == points else f"; drawn through {kept} of its {points} points (benchmark.metrics.thin_curve)"


def _tuned(c: Chart, r: CaseResult, cal: dict[str, Any], best: dict[str, Any], x: float, y: float) -> None:
    """Mark the best threshold's point (x, y), labelled as tuned on the sample."""
    t = "∞" if best["threshold"] is None else f"{best['threshold']:.3f}"  # ∞: nothing called class 1
    accuracy = f"accuracy {cal['best_threshold_accuracy']:.3f} (argmax: {r.scores.accuracy:.3f})"
    what = "above every score: nothing called class 1" if best["threshold"] is None else t
    c.point(x, y, colour=TUNED, css="best", text="tuned on the sample", radius=4.5,
            tooltip=f"best threshold on P({r.classes[1]}) {what}: {accuracy}; tuned on the sample, not a fair score")
    c.key(f"best threshold {t}, tuned on the sample:", TUNED, "dot")
    c.key(accuracy, TUNED, "text")


def _roc_chart(r: CaseResult, cal: dict[str, Any], chart_id: str) -> str:
    roc, pos = cal["roc"], r.classes[1]
    drawn = _drawn(len(roc["fpr"]), roc["points"])
    c = Chart(chart_id, f"ROC curve of {r.case_id}", "false positive rate", "true positive rate",
              heading=f"ROC of class 1 ({pos})",
              description=f"True against false positive rate of class 1 ({pos}) over thresholds on its probability; "
                          f"AUC {roc['auc']:.3f}; dashed: chance{drawn}; the marked point is the threshold with "
                          f"the best accuracy, tuned on the sample.")
    c.line([0.0, 1.0], [0.0, 1.0], colour=CHANCE, css="chance", label="chance (AUC 0.5)", dashed=True)
    c.line(roc["fpr"], roc["tpr"], colour=CURVE, css="curve", label=f"ROC, AUC {roc['auc']:.3f}")
    _tuned(c, r, cal, roc["best"], roc["best"]["fpr"], roc["best"]["tpr"])
    return c.render()


def _pr_chart(r: CaseResult, cal: dict[str, Any], chart_id: str) -> str:
    pr, pos = cal["pr"], r.classes[1]
    drawn = _drawn(len(pr["recall"]), pr["points"])
    c = Chart(chart_id, f"Precision-recall curve of {r.case_id}", "recall", "precision",
              heading=f"Precision-recall of class 1 ({pos})",
              description=f"Precision against recall of class 1 ({pos}) over thresholds on its probability, as a "
                          f"step curve; average precision {pr['average_precision']:.3f}; dashed: the prevalence "
                          f"{pr['prevalence']:.3f} (a model without skill){drawn}; the marked point is the threshold "
                          f"with the best accuracy, tuned on the sample.")
    prevalence = pr["prevalence"]
    c.line([0.0, 1.0], [prevalence, prevalence], colour=CHANCE, css="chance", dashed=True,
           label=f"baseline: prevalence {prevalence:.3f}")
    c.line(pr["recall"], pr["precision"], colour=CURVE, css="curve", step="post",
           label=f"precision-recall, AP {pr['average_precision']:.3f}")
    if pr["best"]:
        _tuned(c, r, cal, pr["best"], pr["best"]["recall"], pr["best"]["precision"])
    return c.render()


def _shots_note(r: CaseResult) -> str:
    assert r.shots is not None
    return (f"few-shot: {r.shots['k']} example(s) per class (shot_seed {r.shots['seed']}), sent in this order "
            "before every image")


def _shot_rows(r: CaseResult) -> list[list[str]]:
    """A few-shot case's examples: sample id, then class index and name (:data:`SHOT_HEADERS`)."""
    names = r.classes
    label = (lambda k: f"{k}: {names[k]}") if r.derived_from is None else str  # merged names don't apply
    return [[str(e["id"]), label(int(e["label"]))] for e in (r.shots or {}).get("examples", [])]


def permutation_rows(results: Sequence[CaseResult]) -> list[list[str]]:
    """One row per case run with permute_labels (:data:`PERMUTATION_HEADERS`)."""
    return [[r.case_id, str(p["shifts"]), " / ".join(f"{a:.3f}" for a in p["accuracies"]), _f(p["mean_accuracy"]),
             _f(p["consistent_accuracy"]), ", ".join(f"{j}: {x:.0%}" for j, x in enumerate(p["digit_share"]))]
            for r in results if (p := r.permutation)]


def shift_rows(p: dict[str, Any]) -> list[list[str]]:
    """A permuted case's shifts (:data:`SHIFT_HEADERS`), then its consistent accuracy."""
    n = len(p["digit_share"])
    return [*([str(s), " ".join(f"{k}->{(k + s) % n}" for k in range(n)), _f(a)]
              for s, a in enumerate(p["accuracies"])),
            ["every shift", "consistent (right under every shift)", _f(p["consistent_accuracy"])]]


def _traffic_lines(t: dict[str, Any] | None) -> list[str]:
    """What a case's live requests met (none when every answer was replayed)."""
    if not t:
        return []
    eff = "-" if t.get("mean_in_flight") is None else f"{t['mean_in_flight']:.2f}"
    out = [f"traffic: {t['requests']} requests sent, {t['rate_limited']} rate limited (429), "
           f"{t['failed_attempts']} failed (5xx, connection, malformed); effective concurrency {eff} (mean in flight over {t['live_s']:.1f} s); limit "
           f"{t['limit_start']} -> lowest {t['limit_min']} -> {t['limit_end']} at the end "
           f"(range {t['min_concurrency']}-{t['concurrency']})"]
    if t.get("replicas"):
        out.append("replicas: " + "; ".join(f"{x['url']} {x['answers']} answers, {x['failures']} failures"
                                            for x in t["replicas"]))
    return out


def _per_class_rows(r: CaseResult) -> list[list[str]]:
    """Per class: name, precision, recall, F1, support (:data:`PER_CLASS_HEADERS`)."""
    s = r.scores
    return [[name, _f(s.precision[i]), _f(s.recall[i]), _f(s.f1[i]), str(s.support[i])]
            for i, name in enumerate(r.classes)]


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def _wrap(label: str, width: int = 14) -> str:
    words, lines, line = label.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def _indent(text: str, pad: str = "    ") -> str:
    return "\n".join(pad + line for line in text.splitlines())


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], table_id: str | None, *,
                sortable: bool = False, row_class: str | None = None,
                help: dict[str, str] | None = None) -> str:
    attrs = (f" id=\"{table_id}\"" if table_id else "") + (" class=\"sortable\"" if sortable else "")
    head = "".join(f"<th title=\"{_e((help or {}).get(h, ''))}\">{_e(h)}</th>" for h in headers)
    tr = f"<tr class=\"{row_class}\">" if row_class else "<tr>"
    body = "\n".join(tr + "".join(f"<td class=\"num\">{_e(c)}</td>" if _NUMERIC.match(c) else f"<td>{_e(c)}</td>"
                                   for c in row) + "</tr>" for row in rows)
    return f"<table{attrs}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


_NUMERIC = re.compile(r"^([-+]?[0-9][0-9.,e+-]*|-)$")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1b1f24;max-width:1500px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px}h3{font-size:14px;margin:0 0 6px}
.note,.citation{color:#57606a;font-size:13px;margin:4px 0 10px}
table{border-collapse:collapse;font-size:12.5px;margin-bottom:6px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#f6f8fa}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th.asc::after{content:" \\25B2"}table.sortable th.desc::after{content:" \\25BC"}
tr.published td{background:#fff8e6;color:#57606a;font-style:italic}
tbody tr:nth-child(even) td{background:#fafbfc}tr.published:nth-child(even) td{background:#fff3d6}
.case{display:inline-block;vertical-align:top;margin:0 18px 18px 0;padding:10px;border:1px solid #d0d7de;
border-radius:6px}
.case img{display:block;max-width:100%;margin-bottom:8px}
.charts{display:flex;flex-wrap:wrap;gap:10px;margin-bottom:8px}
"""

_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var key = function (r) { var t = r.cells[col].textContent.trim(), x = parseFloat(t);
        return t === "-" ? null : (isNaN(x) || !/^[-+]?[0-9.]/.test(t) ? t.toLowerCase() : x); };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _mode_agreement(predictions: Sequence[Prediction]) -> float | None:
    """Share of images where a model run in both modes gave the same class
    (a missing generate label counts as disagreement); None if not run so."""
    both = [p for p in predictions if "score_label" in p]
    if not both:
        return None
    return sum(p.get("generate_label") is not None and p["generate_label"] == p["score_label"]
               for p in both) / len(both)
