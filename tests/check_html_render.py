"""Render the HTML leaderboard of a synthetic results document in headless
Chromium and check the screenshot is not blank. Not collected by pytest
(no ``test_`` prefix); run it by hand or in CI where Chromium is installed:

    python tests/check_html_render.py [--out DIR]      # Debian: apt-get install chromium

The numbers are synthetic (made up here), not measurements of any model.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmark.metrics import merge_predictions, score  # noqa: E402
from benchmark.report import Report  # noqa: E402
from benchmark.session import CaseResult  # noqa: E402

MORPH = ["smooth round", "smooth cigar", "edge-on disk", "unbarred spiral"]
MERGED = ["smooth round", "cigar or edge-on", "unbarred spiral"]
PRICES = {"gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10.0}}


def make_result(case_id: str, task: str, model: str, classes: list[str], y_true: list[int],
                y_pred: list[int | None], *, probs: list[list[float]] | None = None,
                usage: dict[str, int] | None = None, wall_s: float = 2.0, derived_from: str | None = None,
                threshold: float | None = None, cached: int = 0) -> CaseResult:
    predictions = [{"sample_id": str(i), "true": t, "raw": f"Category {p}", "parsed": p,
                    **({"probs": probs[i]} if probs else {})} for i, (t, p) in enumerate(zip(y_true, y_pred))]
    return CaseResult(case_id=case_id, task=task, model=model, model_id=f"{model}-id", prompt="paper",
                      classes=list(classes), scores=score(y_true, y_pred, len(classes)), threshold=threshold,
                      threshold_note="", predictions=predictions, wall_s=wall_s, usage=usage or {},
                      derived_from=derived_from, cached=cached)


def synthetic_results(seed: int = 3, n: int = 60) -> list[CaseResult]:
    """Four cases: LSBG and morphology (+ merged) for a priced API model, LSBG with probabilities."""
    rng = np.random.default_rng(seed)
    lsbg_true = [int(x) for x in rng.integers(0, 2, n)]
    lsbg_pred: list[int | None] = [t if rng.random() < 0.8 else 1 - t for t in lsbg_true]
    lsbg_pred[3] = None
    morph_true = [int(x) for x in rng.integers(0, 4, n)]
    morph_pred: list[int | None] = [t if rng.random() < 0.65 else int((t + 1) % 4) for t in morph_true]
    morph_pred[5] = morph_pred[9] = None
    mt, mp = merge_predictions(morph_true, morph_pred, [0, 1, 1, 2])
    probs = []
    for t in lsbg_true:
        p1 = float(np.clip(0.5 + (0.25 if t else -0.25) + rng.normal(0, 0.2), 0.01, 0.99))
        probs.append([1 - p1, p1])
    llava_pred: list[int | None] = [int(p[1] > 0.5) for p in probs]
    usage = {"prompt_tokens": 1200 * n, "completion_tokens": 6 * n}
    return [
        make_result("lsbg-gpt-4o", "lsbg", "gpt-4o", ["artifact", "LSBG"], lsbg_true, lsbg_pred,
                    usage=usage, wall_s=12.0, threshold=0.8),
        make_result("morphology-gpt-4o", "morphology", "gpt-4o", MORPH, morph_true, morph_pred,
                    usage=usage, wall_s=15.0, threshold=0.62),
        make_result("morphology-merged-gpt-4o", "morphology-merged", "gpt-4o", MERGED, mt, mp,
                    usage=usage, wall_s=15.0, derived_from="morphology", threshold=0.85),
        make_result("lsbg-llava-next", "lsbg", "llava-next", ["artifact", "LSBG"], lsbg_true, llava_pred,
                    probs=probs, usage={}, wall_s=0.05, cached=n),
    ]


def synthetic_report() -> Report:
    return Report(synthetic_results(), prices=PRICES)


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def screenshot(html_path: Path, png_path: Path, *, width: int = 1400, height: int = 2000) -> None:
    exe = chromium_binary()
    if exe is None:
        raise SystemExit("expected a Chromium binary (Debian: apt-get install chromium), found none on PATH")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               f"--screenshot={png_path}", f"--window-size={width},{height}", "--hide-scrollbars",
               html_path.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if not png_path.exists():
        raise SystemExit(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")


def check_not_blank(png_path: Path) -> dict[str, float]:
    """Fail unless the screenshot has ink: many non-white pixels and some colour (heatmaps)."""
    from PIL import Image

    img = np.asarray(Image.open(png_path).convert("RGB"), dtype=np.int16)
    non_white = float((img.min(axis=2) < 235).mean())
    blue = float(((img[..., 2] - img[..., 0]) > 60).mean())   # the Blues heatmaps
    stats = {"non_white": non_white, "blue": blue, "std": float(img.std())}
    if non_white < 0.02 or blue < 0.005 or stats["std"] < 10:
        raise SystemExit(f"screenshot {png_path} looks blank: expected ink and heatmap colour, found {stats}")
    return stats


def check_sorting(html_path: Path) -> list[float]:
    """Click the accuracy header twice in Chromium (via an appended script) and read back the order."""
    import re

    exe = chromium_binary()
    assert exe is not None
    clicked = html_path.with_name("sorted.html")
    col = 5  # 1-based: task, model, prompt, n, accuracy
    clicked.write_text(html_path.read_text(encoding="utf-8").replace(
        "</body>", f"<script>var h=document.querySelector('#measured th:nth-child({col})');h.click();h.click();"
                   "</script></body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               f"--user-data-dir={profile}", "--dump-dom", clicked.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120)
    table = proc.stdout.split('id="measured"', 1)[-1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[-1], flags=re.S)
    acc = [float(re.findall(r"<td[^>]*>(.*?)</td>", r)[col - 1]) for r in rows]
    if not acc or acc != sorted(acc, reverse=True):
        raise SystemExit(f"expected the measured rows sorted by accuracy, descending, found {acc}")
    return acc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for report.html and screenshot.png")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="astrobench-html-"))
    out.mkdir(parents=True, exist_ok=True)
    html_path, png_path = out / "report.html", out / "screenshot.png"
    html_path.write_text(synthetic_report().html(), encoding="utf-8")
    screenshot(html_path, png_path)
    stats = check_not_blank(png_path)
    order = check_sorting(html_path)
    print(f"ok: {html_path} rendered to {png_path} "
          f"({stats['non_white']:.1%} ink, {stats['blue']:.1%} heatmap colour); sorting by accuracy (descending) gives {order}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
