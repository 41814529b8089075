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

from benchmark.report import Report
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
