"""Report pieces: ROC-AUC, cost, row-normalised confusion, summaries, the
terminal detail view, Markdown and the self-contained HTML page."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from benchmark.compare import Baseline
from benchmark.core import BenchError
from benchmark.metrics import estimate_cost, merge_probs, roc_auc, row_normalised
from benchmark.report import Report, results_from_document
from benchmark.session import CaseResult
from tests.support.results import PRICES, make_result, synthetic_results


def test_roc_auc_from_known_probabilities():
    # binary: positives 0.35, 0.8 vs negatives 0.1, 0.4 -> 3 of 4 pairs ranked right
    assert roc_auc([0, 0, 1, 1], [[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]], 2) == 0.75
    # three classes, one-vs-rest macro: class 0 and 2 perfectly ranked, class 1 at 0.5
    probs = [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8], [0.1, 0.2, 0.7]]
    y = [0, 0, 1, 1, 2, 2]
    # class 1 scores: positives 0.3, 0.2 vs negatives 0.1, 0.2, 0.1, 0.2: 0.3 beats 4; 0.2 beats 2, ties 2
    # -> (4 + 2 + 0.5 * 2) / 8 = 0.875; classes 0 and 2 are ranked perfectly
    assert roc_auc(y, probs, 3) == pytest.approx((1.0 + 0.875 + 1.0) / 3)
    assert roc_auc([0, 1], [[0.5, 0.5], None], 2) is None       # a sample without probabilities
    assert roc_auc([1, 1], [[0.1, 0.9], [0.2, 0.8]], 2) is None  # one class only: undefined
    assert roc_auc([0, 1], [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]], 2) is None  # wrong length
    assert merge_probs([0.1, 0.2, 0.3, 0.4], [0, 1, 1, 2]) == pytest.approx([0.1, 0.5, 0.4])


def test_cost_from_known_usage_and_prices():
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 200_000}
    assert estimate_cost(usage, {"input_per_mtok": 2.5, "output_per_mtok": 10.0}) == pytest.approx(4.5)
    assert estimate_cost({"prompt_tokens": 1200, "completion_tokens": 6}, PRICES["gpt-4o"]) == pytest.approx(0.00306)
    assert estimate_cost(usage, None) is None and estimate_cost(usage, {"input_per_mtok": 1}) is None
    assert estimate_cost({}, PRICES["gpt-4o"]) is None


def test_row_normalised_confusion():
    assert row_normalised([[3, 1], [0, 2]]) == [[0.75, 0.25], [0.0, 1.0]]
    # unparseable answers count in the row total: the diagonal is the recall
    assert row_normalised([[3, 1], [0, 2]], [0, 2]) == [[0.75, 0.25], [0.0, 0.5]]
    assert row_normalised([[0, 0], [1, 3]]) == [[0.0, 0.0], [0.25, 0.75]]  # empty row stays zero
    with pytest.raises(ValueError, match="expected 2 unparseable counts, found 3"):
        row_normalised([[1, 0], [0, 1]], [0, 0, 0])


def small_results() -> list[CaseResult]:
    a = make_result("lsbg-gpt-4o", "lsbg", "gpt-4o", ["artifact", "LSBG"], [0, 0, 1, 1, 1], [0, 1, 1, 1, None],
                    usage={"prompt_tokens": 400_000, "completion_tokens": 100_000}, wall_s=2.5, threshold=0.5)
    m = make_result("morphology-llava", "morphology", "llava", ["a", "b", "c"], [0, 1, 2, 2], [0, 2, 2, 1],
                    probs=[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]], wall_s=0.0,
                    cached=4)
    merged = make_result("morphology-merged-llava", "morphology-merged", "llava", ["a", "b or c"], [0, 1, 1, 1],
                         [0, 1, 1, 1], derived_from="morphology")
    return [a, m, merged]


def test_summary_detail_and_json_round_trip():
    rep = Report(small_results(), prices=PRICES)
    a, m, merged = (rep.summary(r) for r in rep.results)
    assert a["cost_usd"] == pytest.approx(0.4 * 2.5 + 0.1 * 10.0)
    assert a["images_per_s"] == 2.0 and a["roc_auc"] is None
    assert a["confusion_row_normalised"] == [[0.5, 0.5], [0.0, 2 / 3]]
    assert m["cost_usd"] is None and m["images_per_s"] is None and m["cached"] == 4
    assert m["merged_accuracy"] == [{"task": "morphology-merged", "accuracy": 1.0}]
    assert m["roc_auc"] == pytest.approx(roc_auc([0, 1, 2, 2], [p["probs"] for p in rep.results[1].predictions], 3))
    row = dict(zip(rep.headers(), rep.rows()[0]))
    assert (row["accuracy"], row["unparseable"], row["cost USD"], row["img/s"], row["result"]) == \
        ("0.600", "1", "2.0000", "2.0", "pass")
    assert dict(zip(rep.headers(), rep.rows()[1]))["cost USD"] == "-"

    detail = rep.detail()
    assert "merged classes (morphology-merged): accuracy 1.000" in detail
    assert "estimated cost $2.0000" in detail and "4 of 4 answers from the cache" in detail
    lsbg_block = detail.split("morphology-llava")[0]
    assert re.search(r"artifact\s+1\.000\s+0\.500\s+0\.667\s+2", lsbg_block)   # P R F1 support
    assert re.search(r"1:LSBG\s+0\s+2\s+1\s+0\.00\s+0\.67", lsbg_block)        # counts, unparseable, row %

    doc = json.loads(json.dumps(rep.document()))
    assert doc["cases"][0]["summary"]["cost_usd"] == pytest.approx(2.0)
    back = results_from_document(doc)
    assert [r.to_json() for r in back] == [r.to_json() for r in rep.results]


def test_markdown_tables_and_published_rows(tmp_path):
    rep = Report(small_results(), prices=PRICES)
    md = rep.markdown()
    measured, published = md.split("## Published reference (not measured here)")
    assert measured.startswith("## Measured")
    assert "| task " in measured and "|-" in measured
    assert re.search(r"\| lsbg\s+\| gpt-4o\s+\| paper\s+\| 5\s+\| 0\.600\s+\|", measured)
    assert "published" not in measured.lower().replace("not measured here", "")
    assert "Source: Tanoglidis & Jain (2024)" in published
    assert "published: paper (approximate, ~0.83)" in published and "0.574" in published
    # with a baseline: a comparison table with Δacc and p
    base = tmp_path / "base.json"
    doc = json.loads(json.dumps(rep.document()))
    for p in doc["cases"][0]["predictions"]:
        p["parsed"] = p["true"]          # baseline all right: b = 2 (ids 1 and 4), c = 0
    base.write_text(json.dumps(doc))
    rep2 = Report.build(rep.results, baseline=Baseline.load(base))
    md2 = rep2.markdown()
    assert "## Against baseline" in md2
    assert re.search(r"\| lsbg-gpt-4o\s+\| 5\s+\| 1\.000\s+\| 0\.600\s+\| -0\.400\s+\| 2\s+\| 0\s+\| 0\.5\s+\|"
                     r" no significant change", md2)


class _Parse(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict]] = []
        self.rows: dict[str, list[dict]] = {}
        self.imgs: list[str] = []
        self.scripts = ""
        self.urls: list[str] = []
        self._table: str | None = None
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            if k in a:
                self.urls.append(a[k])
        if tag == "table":
            self._table = a.get("id", "")
            self.rows.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self.rows[self._table].append({"class": a.get("class"), "cells": []})
        elif tag == "img":
            self.imgs.append(a["src"])
        elif tag == "script":
            self._in_script = True

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts += data
        elif self._table is not None and self.rows[self._table] and data.strip():
            self.rows[self._table][-1]["cells"].append(data.strip())


def test_html_is_self_contained_sortable_with_a_heatmap_per_case():
    results = synthetic_results(n=30)
    page = Report(results, prices=PRICES).html()
    p = _Parse()
    p.feed(page)
    measured = [r for r in p.rows["measured"][1:]]           # first row: header
    assert [r["cells"][0] for r in measured] == [r.task for r in results]
    assert all(r["class"] is None for r in measured)
    assert 'querySelectorAll("table.sortable")' in p.scripts and "addEventListener(\"click\"" in p.scripts
    assert 'id="measured" class="sortable"' in page
    assert len(p.imgs) == len(results)
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    pub = p.rows["published"][1:]
    assert pub and all(r["class"] == "published" and r["cells"][-1].startswith("published: ") for r in pub)
    assert all(u.startswith("data:") for u in p.urls)
    assert not re.search(r"https?://|//cdn|@import", page)
    assert "<h2>Published reference (not measured here)</h2>" in page
    assert page.index('id="measured"') < page.index('id="published"')


def test_mode_agreement_from_both_mode_predictions():
    from benchmark.report import _mode_agreement

    preds = [{"generate_label": 1, "score_label": 1}, {"generate_label": None, "score_label": 0},
             {"generate_label": 0, "score_label": 1}, {"generate_label": 2, "score_label": 2}]
    assert _mode_agreement(preds) == 0.5
    assert _mode_agreement([{"parsed": 1}]) is None


# -- class names are text, and the JSON survives a failed rendering ----------------
NASTY = ["$\\alpha$ disk", "$x", "$\\foo$ bar", "$x^$", "cost $5 or $6"]


def test_class_names_with_dollar_signs_are_shown_literally(monkeypatch):
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    figures = []
    savefig = Figure.savefig

    def capture(self, *args, **kw):
        figures.append(self)
        return savefig(self, *args, **kw)

    monkeypatch.setattr(Figure, "savefig", capture)
    result = make_result("$odd$-case", "$odd$", "gpt-4o", NASTY, [0, 1, 2, 3, 4, 0], [0, 1, 2, 4, None, 3])
    page = Report([result], prices=PRICES).html()  # mathtext would raise on "$\foo$" and "$x^$"
    assert page.count("data:image/png;base64,") == 1
    [fig] = figures
    texts = [t for t in fig.findobj(Text) if "$" in t.get_text()]
    shown = " ".join(t.get_text() for t in texts).replace("\n", " ")
    assert all(name in shown for name in NASTY) and "$odd$-case" in shown
    assert all(not t.get_parse_math() for t in texts)  # drawn as written, not as math


def test_rendering_failure_keeps_the_json_and_the_other_outputs(tmp_path, monkeypatch):
    rep = Report(small_results(), prices=PRICES)
    paths = {"json_path": tmp_path / "out" / "results.json", "md_path": tmp_path / "out" / "board.md",
             "html_path": tmp_path / "out" / "board.html"}

    def boom(*args, **kw):
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(Report, "html", boom)
    with pytest.raises(BenchError) as err:
        rep.write(**paths)
    msg = str(err.value)
    assert str(paths["html_path"]) in msg and "renderer exploded" in msg
    assert str(paths["json_path"]) in msg  # says where the results are safe
    written, expected = json.loads(paths["json_path"].read_text()), json.loads(json.dumps(rep.document()))
    written.pop("created"), expected.pop("created")  # the clock moves on a loaded machine
    assert written == expected
    assert paths["md_path"].read_text().startswith("## Measured")
    assert not paths["html_path"].exists()

    monkeypatch.undo()
    for p in paths.values():
        p.unlink(missing_ok=True)
    monkeypatch.setattr(Report, "markdown", boom)
    with pytest.raises(BenchError, match=r"board\.md.*renderer exploded"):
        rep.write(**paths)
    assert json.loads(paths["json_path"].read_text())["cases"]
    assert paths["html_path"].read_text().startswith("<!doctype html>")  # still written
    assert not paths["md_path"].exists()


def test_every_pair_of_cases_on_one_sample_is_compared_holm_corrected():
    """Prompt A vs B and model X vs Y in one run: Δacc, exact McNemar, Holm across the pairs."""
    import dataclasses

    from benchmark.compare import holm
    from tests.support.results import make_result

    y = [0, 1] * 10
    same = dict(sample_sha256="s" * 64)
    paper = dataclasses.replace(make_result("lsbg-gpt-4o", "lsbg", "gpt-4o", ["a", "b"], y, y), **same)  # 20/20
    current = dataclasses.replace(make_result("lsbg-gpt-4o-current", "lsbg", "gpt-4o-current", ["a", "b"], y,
                                              [1 - t for t in y[:8]] + y[8:]), **same)  # 12/20
    terse = dataclasses.replace(make_result("lsbg-gpt-4o-terse", "lsbg", "gpt-4o", ["a", "b"], y,
                                            [1 - y[0]] + y[1:]), prompt="terse", **same)  # 19/20
    other = dataclasses.replace(make_result("lsbg-other", "lsbg", "other", ["a", "b"], y, y),
                                sample_sha256="t" * 64)  # another sample: never paired
    report = Report([paper, current, terse, other])
    pairs = {(p.a, p.b_case): p for p in report.pairs()}
    assert set(pairs) == {("lsbg-gpt-4o", "lsbg-gpt-4o-current"), ("lsbg-gpt-4o", "lsbg-gpt-4o-terse"),
                          ("lsbg-gpt-4o-current", "lsbg-gpt-4o-terse")}
    p1 = pairs[("lsbg-gpt-4o", "lsbg-gpt-4o-current")]
    assert (p1.n_shared, p1.b, p1.c, p1.accuracy_a, p1.accuracy_b) == (20, 8, 0, 1.0, 0.6)
    p2 = pairs[("lsbg-gpt-4o", "lsbg-gpt-4o-terse")]
    p3 = pairs[("lsbg-gpt-4o-current", "lsbg-gpt-4o-terse")]
    assert (p2.b, p2.c, p3.b, p3.c) == (1, 0, 0, 7)  # sample 0 is wrong in both current and terse
    raw = [2 / 2 ** 8, 1.0, 2 / 2 ** 7]  # exact McNemar of (8, 0), (1, 0) and (0, 7)
    assert [p1.p_value, p2.p_value, p3.p_value] == pytest.approx(raw)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3p, max(2p, prev), max(p, prev)
    assert [p1.p_holm, p2.p_holm, p3.p_holm] == pytest.approx(holm(raw))
    assert p1.verdict == "lsbg-gpt-4o better" and p3.verdict == "lsbg-gpt-4o-terse better"
    assert p2.verdict == "no significant difference"
    assert "Cases against each other" in report.text() and "Holm p" in report.markdown()
    page = report.html()
    assert 'id="pairs"' in page and 'id="pairs-lsbg"' in page and "+0.400 (" in page
    assert report.document()["pairs"][0]["b"] == 8


def test_repeats_and_calibration_show_in_the_detail_and_the_page():
    import dataclasses

    from tests.support.results import make_result

    y = [0, 0, 1, 1]
    r = make_result("lsbg-x", "lsbg", "x", ["a", "b"], y, [0, 0, 1, 0],
                    probs=[[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    r = dataclasses.replace(r, repeats={"n": 3, "accuracies": [1.0, 0.5, 0.75], "mean": 0.75, "sd": 0.25,
                                        "majority_accuracy": 0.75})
    report = Report([r])
    detail, page = report.detail(), report.html()
    for text in ("repeats: 3, accuracy mean 0.750 +- 0.250 (sd), majority vote 0.750",
                 "calibration: Brier 0.2813, ECE 0.1375 (10 bins); best threshold on P(class 1) 0.450"):
        assert text in detail and text in page


# -- class-probability views: reliability diagram, ROC and precision-recall curves (inline SVG) ----
def _charts(page: str) -> dict[str, ET.Element]:
    """The page's inline SVG charts, parsed, by id."""
    return {e.get("id"): e for e in (ET.fromstring(s) for s in re.findall(r"<svg .*?</svg>", page, flags=re.DOTALL))}


def _texts(chart: ET.Element) -> list[str]:
    return [t.text for t in chart.iter("text") if t.text]


def test_probability_views_are_drawn_at_the_designed_coordinates():
    from tests.support.results import designed_probability_results

    results = designed_probability_results()  # lsbg-scored (binary), morphology-scored (3 classes), lsbg-text
    page = Report(results).html()
    charts = _charts(page)
    # binary: reliability, ROC and PR; three classes: reliability only; no probabilities: nothing
    assert sorted(charts) == ["chart-0-pr", "chart-0-reliability", "chart-0-roc", "chart-1-reliability"]
    sections = re.findall(r'<section class="case" id="case-([^"]+)">(.*?)</section>', page, flags=re.DOTALL)
    assert [(cid, body.count("<svg ")) for cid, body in sections] == [
        ("lsbg-scored", 3), ("morphology-scored", 1), ("lsbg-text", 0)]
    assert "<script" not in "".join(re.findall(r"<svg .*?</svg>", page, flags=re.DOTALL))
    # the plot area is 260 px square from (46, 26): x = 46 + 260 v, y = 286 - 260 v
    roc = charts["chart-0-roc"]
    assert (roc.get("role"), roc.get("aria-labelledby")) == ("img", "chart-0-roc-title chart-0-roc-desc")
    assert roc.find("title").text == "ROC curve of lsbg-scored"
    assert "AUC 0.656" in roc.find("desc").text and "tuned on the sample" in roc.find("desc").text
    # (fpr, tpr) = (0, 0) (.25, .25) (.25, .5) (.5, .5) (.5, 1) (1, 1)
    assert roc.find("path[@class='curve']").get("d") == "M46 286L111 221L111 156L176 156L176 26L306 26"
    assert roc.find("path[@class='chance']").get("d") == "M46 286L306 26"
    best = roc.find("circle[@class='best']")
    assert (best.get("cx"), best.get("cy")) == ("176", "26")  # P(LSBG) >= 0.375: fpr 0.5, tpr 1
    assert "tuned on the sample, not a fair score" in best.find("title").text
    assert {"ROC of class 1 (LSBG)", "chance (AUC 0.5)", "ROC, AUC 0.656", "tuned on the sample",
            "best threshold 0.375, tuned on the sample:", "accuracy 0.750 (argmax: 0.500)"} <= set(_texts(roc))
    assert {"false positive rate", "true positive rate", "0", "0.2", "0.4", "0.6", "0.8", "1"} <= set(_texts(roc))
    # PR as steps (recall decreasing): (1, .5) (1, 2/3) (.75, .6) (.5, .5) (.5, 2/3) (.25, .5) (0, 1)
    pr = charts["chart-0-pr"]
    assert pr.find("path[@class='curve']").get("d") == (
        "M306 156L306 112.7L241 112.7L241 130L176 130L176 156L176 112.7L111 112.7L111 156L46 156L46 26")
    assert pr.find("path[@class='chance']").get("d") == "M46 156L306 156"  # prevalence 0.5
    best = pr.find("circle[@class='best']")
    assert (best.get("cx"), best.get("cy")) == ("306", "112.7")  # recall 1, precision 2/3
    assert {"precision-recall, AP 0.608", "baseline: prevalence 0.500", "recall", "precision"} <= set(_texts(pr))
    # reliability: a bar per used bin (accuracy), a dot at its mean confidence, the count in the tooltip
    rel = charts["chart-0-reliability"]
    bars = [(b.get("x"), b.get("y"), b.get("width"), b.get("height"))
            for b in rel.iter("rect") if b.get("class") == "bin"]
    assert bars == [("150", "286", "26", "0"), ("202", "286", "26", "0"), ("228", "26", "26", "260"),
                    ("254", "112.7", "26", "173.3")]
    tips = [b.find("title").text for b in rel.iter("rect") if b.get("class") == "bin"]
    assert tips[-1] == "confidence (0.8, 0.9]: 3 answers, mean confidence 0.875, accuracy 0.667"
    dots = [(c.get("cx"), c.get("cy")) for c in rel.iter("circle") if c.get("class") == "bin-mean"]
    assert dots == [("176", "286"), ("208.5", "286"), ("241", "26"), ("273.5", "112.7")]
    assert rel.find("path[@class='diagonal']").get("d") == "M46 286L306 26"
    assert "Reliability (ECE 0.359)" in _texts(rel)
    three = charts["chart-1-reliability"]
    assert len([b for b in three.iter("rect") if b.get("class") == "bin"]) == 4
    assert "Reliability (ECE 0.312)" in _texts(three)


def test_results_file_alone_carries_and_renders_the_views(tmp_path):
    from benchmark.merge import MergedReport, load_results
    from tests.support.results import designed_probability_results

    rep = Report(designed_probability_results())
    rep.write(json_path=tmp_path / "results.json")

    def not_json(token):
        raise AssertionError(f"expected strict JSON, found {token}")

    doc = json.loads((tmp_path / "results.json").read_text(), parse_constant=not_json)
    cal = doc["cases"][0]["summary"]["calibration"]
    assert [b["count"] for b in cal["reliability"]] == [0, 0, 0, 0, 1, 0, 2, 2, 3, 0]
    assert cal["roc"]["fpr"] == [0, 0.25, 0.25, 0.5, 0.5, 1] and cal["roc"]["threshold"][0] is None
    assert cal["roc"]["auc"] == 21 / 32 and cal["pr"]["average_precision"] == pytest.approx(73 / 120)
    assert cal["pr"]["threshold"][-1] is None and cal["pr"]["best"]["recall"] == 1.0
    assert "roc" not in doc["cases"][1]["summary"]["calibration"]
    assert doc["cases"][2]["summary"]["calibration"] is None
    merged, _ = MergedReport.from_files([load_results(tmp_path / "results.json")])
    assert _charts(merged.html()).keys() == _charts(rep.html()).keys()
    assert [ET.tostring(e) for e in _charts(merged.html()).values()] == \
        [ET.tostring(e) for e in _charts(rep.html()).values()]


def test_average_precision_in_the_tables_and_the_detail():
    from tests.support.results import designed_probability_results

    rep = Report(designed_probability_results())
    assert [dict(zip(rep.headers(), row))["AP"] for row in rep.rows()] == ["0.608", "-", "-"]
    md = rep.markdown()
    assert "| AP " in md
    detail = rep.detail()
    assert ("best threshold on P(class 1) 0.375 gives accuracy 0.750 (tuned on this sample, not a fair score); "
            "average precision 0.608 (positive class 1, LSBG; prevalence 0.500)") in detail
    assert detail.count("average precision") == 1  # not for three classes


def test_chart_text_is_escaped():
    from benchmark.svg import Chart

    c = Chart("c<1>", 'a "b" & <c>', "x & y", "<y>", description="d & e", heading="h <&>")
    c.line([0, 1], [0, 1], colour="#000", css="curve", label="AUC <0.5> & co", tooltip="t & u")
    c.point(0.25, 0.5, colour="#000", css="best", text="p & q")
    svg = ET.fromstring(c.render())  # well-formed XML: everything escaped
    assert svg.get("id") == "c<1>" and svg.find("title").text == 'a "b" & <c>'
    assert {"h <&>", "x & y", "<y>", "AUC <0.5> & co", "p & q"} <= set(_texts(svg))


def test_best_threshold_above_every_score_is_marked_at_the_origin():
    # labels 0 0 1, P(1) 0.9 0.8 0.1: any threshold calls a 0 class 1; calling nothing class 1 gets 2 of 3
    r = make_result("lsbg-odd", "lsbg", "odd", ["artifact", "LSBG"], [0, 0, 1], [1, 1, 0],
                    probs=[[0.1, 0.9], [0.2, 0.8], [0.9, 0.1]])
    rep = Report([r])
    cal = rep.summary(r)["calibration"]
    assert (cal["best_threshold"], cal["best_threshold_accuracy"]) == (None, 2 / 3)
    assert cal["roc"]["best"] == {"threshold": None, "fpr": 0.0, "tpr": 0.0} and cal["pr"]["best"] is None
    charts = _charts(rep.html())
    best = charts["chart-0-roc"].find("circle[@class='best']")
    assert (best.get("cx"), best.get("cy")) == ("46", "286")
    assert "best threshold ∞, tuned on the sample:" in _texts(charts["chart-0-roc"])
    assert charts["chart-0-pr"].find("circle[@class='best']") is None  # precision undefined there
    assert "best threshold on P(class 1) above every score (nothing class 1) gives accuracy 0.667" in rep.detail()
    json.loads(json.dumps(rep.document()), parse_constant=lambda token: pytest.fail(f"not strict JSON: {token}"))
