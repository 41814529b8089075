"""The HTML leaderboard in a real browser: headless Chromium renders the page of
the synthetic results (tests.support.results, made-up numbers) to a screenshot
that is not blank, and its sortable table sorts by accuracy when the header is
clicked.

Runs where a Chromium binary is on PATH, else skips (Debian: apt-get install chromium).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from benchmark.report import CURVE, TUNED, Report
from tests.support.chromium import chromium_binary, headless
from tests.support.results import PRICES, synthetic_results

pytestmark = pytest.mark.skipif(chromium_binary() is None, reason="no Chromium: apt-get install chromium")


def screenshot(page: Path, tmp_path: Path, *, width: int = 1400, height: int = 2000) -> Path:
    png = tmp_path / f"{page.stem}.png"
    proc = headless(page, tmp_path / f"profile-{page.stem}", f"--screenshot={png}",
                    f"--window-size={width},{height}", "--hide-scrollbars")
    assert png.exists(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return png


def ink(png: Path) -> dict[str, float]:
    """Share of non-white pixels, share of the heatmaps' blue, and the pixel spread."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    return {"non_white": float((img.min(axis=2) < 235).mean()),
            "blue": float(((img[..., 2] - img[..., 0]) > 60).mean()),   # the Blues heatmaps
            "std": float(img.std())}


def looks_blank(stats: dict[str, float]) -> bool:
    return stats["non_white"] < 0.02 or stats["blue"] < 0.005 or stats["std"] < 10


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "report.html"
    path.write_text(Report(synthetic_results(), prices=PRICES).html(), encoding="utf-8")
    return path


def test_the_page_renders_text_and_heatmaps(page: Path, tmp_path: Path) -> None:
    stats = ink(screenshot(page, tmp_path))
    assert not looks_blank(stats), f"screenshot of {page} looks blank: expected ink and heatmap colour, found {stats}"
    # the check tells a blank rendering: the same page with nothing shown fails it
    hidden = tmp_path / "hidden.html"
    hidden.write_text(page.read_text(encoding="utf-8").replace("</head>", "<style>body{display:none}</style></head>"),
                      encoding="utf-8")
    blank = ink(screenshot(hidden, tmp_path))
    assert looks_blank(blank), blank


SORT_BY_ACCURACY = """<script>
(function () {
  var table = document.getElementById("measured");
  var ths = Array.prototype.slice.call(table.querySelectorAll("thead th"));
  var col = ths.findIndex(function (h) { return h.textContent.trim() === "accuracy"; });
  var shown = function () { return Array.prototype.map.call(table.tBodies[0].rows,
                                                            function (r) { return r.cells[col].textContent.trim(); }); };
  var seen = {col: col, before: shown()};
  ths[col].click(); seen.once = shown();
  ths[col].click(); seen.twice = shown();
  var out = document.createElement("pre"); out.id = "seen"; out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
})();
</script></body>"""


def test_clicking_the_accuracy_header_sorts_the_measured_rows(page: Path, tmp_path: Path) -> None:
    clicked = tmp_path / "clicked.html"
    clicked.write_text(page.read_text(encoding="utf-8").replace("</body>", SORT_BY_ACCURACY), encoding="utf-8")
    proc = headless(clicked, tmp_path / "profile", "--dump-dom")
    found = re.search(r'<pre id="seen">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    assert found, f"expected the clicks' record in the DOM (exit {proc.returncode}): {proc.stderr[-2000:]}"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["col"] >= 0, "no 'accuracy' column in the measured table"
    before, once, twice = ([float(x) for x in seen[k]] for k in ("before", "once", "twice"))
    assert len(before) == len(synthetic_results()) and len(set(before)) > 1  # else any order is sorted
    assert once == sorted(before)                         # first click: ascending
    assert twice == sorted(before, reverse=True)          # second click: descending


# -- the class-probability views (inline SVG) as laid out by the browser ------------------------
CHART_LAYOUT = """<script>
(function () {
  var round = function (v) { return Math.round(v * 10) / 10; };
  var box = function (el) { var r = el.getBoundingClientRect(); return [r.left, r.top, r.width, r.height].map(round); };
  var all = function (svg, sel) { return Array.prototype.map.call(svg.querySelectorAll(sel), box); };
  var seen = Array.prototype.map.call(document.querySelectorAll("svg.chart"), function (svg) {
    var curve = svg.querySelector("path.curve");
    return {id: svg.id, section: svg.closest("section").id, name: svg.querySelector("title").textContent,
            svg: box(svg), frame: box(svg.querySelector("rect.frame")), curve: curve ? box(curve) : null,
            length: curve ? curve.getTotalLength() : null, best: all(svg, "circle.best"),
            bins: all(svg, "rect.bin").length, dots: all(svg, "circle.bin-mean").length, text_boxes: all(svg, "text"),
            texts: Array.prototype.map.call(svg.querySelectorAll("text"), function (t) { return t.textContent; })};
  });
  var out = document.createElement("pre"); out.id = "seen"; out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
})();
</script></body>"""


@pytest.fixture
def plots_page(tmp_path: Path) -> Path:
    from tests.support.results import designed_probability_results

    path = tmp_path / "plots.html"
    path.write_text(Report(designed_probability_results()).html(), encoding="utf-8")
    return path


def test_probability_charts_are_laid_out_in_the_browser(plots_page: Path, tmp_path: Path) -> None:
    laid = tmp_path / "laid.html"
    laid.write_text(plots_page.read_text(encoding="utf-8").replace("</body>", CHART_LAYOUT), encoding="utf-8")
    proc = headless(laid, tmp_path / "profile", "--window-size=1400,2400", "--dump-dom")
    found = re.search(r'<pre id="seen">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    assert found, f"expected the charts' layout in the DOM (exit {proc.returncode}): {proc.stderr[-2000:]}"
    charts = {c["id"]: c for c in json.loads(html.unescape(found.group(1)))}
    # the binary case has reliability, ROC and PR; three classes: reliability only; no probabilities: none
    assert {k: c["section"] for k, c in charts.items()} == {
        "chart-0-reliability": "case-lsbg-scored", "chart-0-roc": "case-lsbg-scored", "chart-0-pr": "case-lsbg-scored",
        "chart-1-reliability": "case-morphology-scored"}
    assert charts["chart-0-roc"]["name"] == "ROC curve of lsbg-scored"
    for c in charts.values():
        left, top, width, height = c["svg"]
        assert width == 320 and c["frame"][2:] == [260, 260]  # 46 + 260 + 14; the plot area
        for tl, tt, tw, th in c["text_boxes"]:  # every label (ticks, axes, legend) shown whole, inside its chart
            assert left - 0.5 <= tl and tl + tw <= left + width + 0.5, (c["id"], c["texts"])
            assert top - 0.5 <= tt and tt + th <= top + height + 0.5, (c["id"], c["texts"])
    # the three charts of a case stand side by side, in order, without overlapping
    row = [charts[f"chart-0-{k}"]["svg"] for k in ("reliability", "roc", "pr")]
    assert row[0][1] == row[1][1] == row[2][1]
    assert row[0][0] + row[0][2] <= row[1][0] and row[1][0] + row[1][2] <= row[2][0]
    roc, pr = charts["chart-0-roc"], charts["chart-0-pr"]
    # the ROC curve runs from (0, 0) to (1, 1), so it spans the plot area; its length on screen, in px:
    # (0,0)-(65,65) then 65 up, 65 right, 130 up, 130 right
    assert roc["curve"] == roc["frame"]
    assert roc["length"] == pytest.approx(65 * 2 ** 0.5 + 65 + 65 + 130 + 130, abs=0.5)
    fl, ft, fw, fh = roc["frame"]
    [(bl, bt, bw, bh)] = roc["best"]
    assert (bl + bw / 2, bt + bh / 2) == pytest.approx((fl + 0.5 * fw, ft), abs=0.6)  # fpr 0.5, tpr 1
    [(bl, bt, bw, bh)] = pr["best"]
    fl, ft, fw, fh = pr["frame"]
    assert (bl + bw / 2, bt + bh / 2) == pytest.approx((fl + fw, ft + fh / 3), abs=0.6)  # recall 1, precision 2/3
    assert {"ROC, AUC 0.656", "chance (AUC 0.5)", "tuned on the sample"} <= set(roc["texts"])
    assert {"precision-recall, AP 0.608", "baseline: prevalence 0.500", "tuned on the sample"} <= set(pr["texts"])
    assert (charts["chart-0-reliability"]["bins"], charts["chart-0-reliability"]["dots"]) == (4, 4)
    assert charts["chart-1-reliability"]["bins"] == 4 and not charts["chart-1-reliability"]["best"]


def _colour_share(png: Path, colour: str) -> int:
    """Pixels within 40 (summed over channels) of ``colour`` ("#rrggbb")."""
    from PIL import Image

    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    return int((np.abs(img - np.asarray(rgb)).sum(axis=2) < 40).sum())


def test_probability_charts_paint(plots_page: Path, tmp_path: Path) -> None:
    shot = screenshot(plots_page, tmp_path, height=2400)
    curve, tuned = _colour_share(shot, CURVE), _colour_share(shot, TUNED)
    assert curve > 1000 and tuned > 60, (curve, tuned)
    # the check tells charts that are not drawn: the same page without them fails it
    hidden = tmp_path / "hidden.html"
    no_svg = plots_page.read_text(encoding="utf-8").replace("</head>", "<style>svg{display:none}</style></head>")
    hidden.write_text(no_svg, encoding="utf-8")
    shot = screenshot(hidden, tmp_path, height=2400)
    assert _colour_share(shot, CURVE) < 50 and _colour_share(shot, TUNED) < 10


SHOTS_SEEN = """<script>
(function () {
  var table = document.getElementById("shots-lsbg-gpt-4o");
  var rows = table ? Array.prototype.map.call(table.tBodies[0].rows, function (r) {
    return Array.prototype.map.call(r.cells, function (c) { return c.textContent; }); }) : null;
  var box = table ? table.getBoundingClientRect() : null;
  var out = document.createElement("pre"); out.id = "seen";
  out.textContent = JSON.stringify({rows: rows, height: box ? box.height : 0, width: box ? box.width : 0});
  document.body.appendChild(out);
})();
</script></body>"""


def test_a_few_shot_case_shows_its_examples(tmp_path: Path) -> None:
    results = synthetic_results()
    results[0].shots = {"k": 2, "seed": 0, "examples": [{"id": "601", "label": 0}, {"id": "742", "label": 1},
                                                        {"id": "555", "label": 0}, {"id": "913", "label": 1}]}
    page = tmp_path / "shots.html"
    page.write_text(Report(results, prices=PRICES).html().replace("</body>", SHOTS_SEEN), encoding="utf-8")
    proc = headless(page, tmp_path / "profile", "--dump-dom")
    found = re.search(r'<pre id="seen">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    assert found, f"expected the script's record in the DOM (exit {proc.returncode}): {proc.stderr[-2000:]}"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["rows"] == [["601", "0: artifact"], ["742", "1: LSBG"], ["555", "0: artifact"], ["913", "1: LSBG"]]
    assert seen["height"] > 40 and seen["width"] > 40  # laid out, not hidden
