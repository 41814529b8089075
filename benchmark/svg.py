"""Inline SVG charts for the HTML report: one square plot over [0, 1] x [0, 1] with ticks,
grid, axis labels, a legend under it, and marks (lines, step lines, bars, labelled points).

No scripts and no external assets, so a page stays one offline file. Each chart is an
``role="img"`` element named by its ``<title>`` and described by its ``<desc>``; every mark
may carry a tooltip (its own ``<title>``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

TICKS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
LEFT, RIGHT, TOP, BOTTOM, LEGEND_ROW = 46, 14, 26, 40, 16


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _tip(tooltip: str | None) -> str:
    return f"<title>{_e(tooltip)}</title>" if tooltip else ""


def _dash(dashed: bool) -> str:
    return ' stroke-dasharray="5 4"' if dashed else ""


def _symbol(kind: str, colour: str) -> str:
    """A legend entry's symbol: a line (solid or dashed), a dot, or nothing (text)."""
    if kind == "dot":
        return f'<circle cx="9" cy="-4" r="3.5" fill="{colour}"/>'
    if kind in ("line", "dashed"):
        return f'<line x1="0" y1="-4" x2="18" y2="-4" stroke="{colour}" stroke-width="2"{_dash(kind == "dashed")}/>'
    return ""


@dataclass
class Chart:
    """A chart under construction: add marks, then :meth:`render` it.

    ``chart_id`` must be unique in the page (it names the title and description).
    """

    chart_id: str
    title: str  # the accessible name
    x_label: str
    y_label: str
    description: str = ""
    heading: str = ""  # drawn above the plot (default: the title)
    size: int = 260  # the plot area's side, px
    _marks: list[str] = field(default_factory=list)
    _legend: list[tuple[str, str, str]] = field(default_factory=list)  # label, colour, line | dashed | dot | text

    def x(self, v: float) -> float:
        return round(LEFT + min(max(v, 0.0), 1.0) * self.size, 1)

    def y(self, v: float) -> float:
        return round(TOP + (1.0 - min(max(v, 0.0), 1.0)) * self.size, 1)

    def line(self, xs: Sequence[float], ys: Sequence[float], *, colour: str, css: str, label: str | None = None,
             dashed: bool = False, step: str | None = None, tooltip: str | None = None) -> None:
        """A polyline through (xs, ys). ``step="post"``: hold each y until the next x, then move
        (matplotlib's ``drawstyle="steps-post"``)."""
        pts = [(self.x(a), self.y(b)) for a, b in zip(xs, ys)]
        if step == "post":
            pts = [q for (x0, y0), (x1, _) in pairwise(pts) for q in ((x0, y0), (x1, y0))] + pts[-1:]
        pts = [q for i, q in enumerate(pts) if i == 0 or q != pts[i - 1]]
        d = "M" + "L".join(f"{a:g} {b:g}" for a, b in pts)
        self._marks.append(f'<path class="{css}" d="{d}" fill="none" stroke="{colour}" stroke-width="2"{_dash(dashed)}>'
                           f"{_tip(tooltip)}</path>")
        if label:
            self.key(label, colour, "dashed" if dashed else "line")

    def key(self, label: str, colour: str, kind: str = "line") -> None:
        """A legend entry: ``kind`` line, dashed, dot or text (no symbol)."""
        self._legend.append((label, colour, kind))

    def bar(self, x0: float, x1: float, height: float, *, colour: str, css: str, tooltip: str | None = None) -> None:
        """A bar from 0 up to ``height`` over [x0, x1]."""
        left, top = self.x(x0), self.y(height)
        self._marks.append(f'<rect class="{css}" x="{left:g}" y="{top:g}" width="{self.x(x1) - left:g}" '
                           f'height="{self.y(0.0) - top:g}" fill="{colour}" fill-opacity="0.35" stroke="{colour}">'
                           f"{_tip(tooltip)}</rect>")

    def point(self, x: float, y: float, *, colour: str, css: str, text: str | None = None,
              tooltip: str | None = None, radius: float = 3.5) -> None:
        """A dot, with ``text`` beside it (on the side with more room)."""
        cx, cy = self.x(x), self.y(y)
        self._marks.append(f'<circle class="{css}" cx="{cx:g}" cy="{cy:g}" r="{radius:g}" fill="{colour}" '
                           f'stroke="#fff">{_tip(tooltip)}</circle>')
        if text:
            anchor, dx = ("end", -7) if x > 0.5 else ("start", 7)
            dy = 14 if y > 0.85 else -6
            self._marks.append(f'<text class="{css}-label" x="{cx + dx:g}" y="{cy + dy:g}" text-anchor="{anchor}" '
                               f'font-size="10" fill="{colour}" stroke="#fff" stroke-width="3" paint-order="stroke">'
                               f'{_e(text)}</text>')

    def render(self) -> str:
        """The ``<svg>`` element."""
        s, width = self.size, LEFT + self.size + RIGHT
        height = TOP + s + BOTTOM + LEGEND_ROW * len(self._legend) + 6
        grid, labels = [], []
        for t in TICKS:
            gx, gy = self.x(t), self.y(t)
            grid.append(f'<line x1="{gx:g}" y1="{TOP}" x2="{gx:g}" y2="{TOP + s}"/>'
                        f'<line x1="{LEFT}" y1="{gy:g}" x2="{LEFT + s}" y2="{gy:g}"/>')
            labels.append(f'<text x="{gx:g}" y="{TOP + s + 13}" text-anchor="middle">{t:g}</text>'
                          f'<text x="{LEFT - 5}" y="{gy + 3:g}" text-anchor="end">{t:g}</text>')
        legend_top = TOP + s + BOTTOM - 4
        legend = [f'<g class="legend-entry" transform="translate({LEFT},{legend_top + LEGEND_ROW * (i + 1)})">'
                  f'{_symbol(kind, colour)}<text x="24" y="0">{_e(label)}</text></g>'
                  for i, (label, colour, kind) in enumerate(self._legend)]
        cid = _e(self.chart_id)
        return (f'<svg class="chart" id="{cid}" width="{width}" height="{height}" '
                f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="{cid}-title {cid}-desc" '
                f'font-family="system-ui,sans-serif" font-size="11" fill="#1b1f24">'
                f'<title id="{cid}-title">{_e(self.title)}</title><desc id="{cid}-desc">{_e(self.description)}</desc>'
                f'<text class="chart-title" x="{LEFT}" y="15" font-size="12" font-weight="600">'
                f'{_e(self.heading or self.title)}</text>'
                f'<g class="grid" stroke="#eaeef2">{"".join(grid)}</g>'
                f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{s}" height="{s}" fill="none" stroke="#8c959f"/>'
                f'<g class="ticks" font-size="10" fill="#57606a">{"".join(labels)}</g>'
                f'<text class="x-label" x="{LEFT + s / 2:g}" y="{TOP + s + 28}" text-anchor="middle">'
                f'{_e(self.x_label)}</text>'
                f'<text class="y-label" transform="translate(12,{TOP + s / 2:g}) rotate(-90)" text-anchor="middle">'
                f'{_e(self.y_label)}</text>'
                + "".join(self._marks) + "".join(legend) + "</svg>")
