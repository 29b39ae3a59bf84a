"""Plain SVG charts for reports and benchmarks: no plotting library, no fonts to install.

Theory of operation: a chart is a ``Chart`` of one or more ``Series`` (points in data units)
drawn as polylines on linear axes with "nice" ticks (1, 2, 5 x 10^k), plus optional vertical
``Marker`` lines (a fault, a kill) and a ``Lane`` of coloured spans beneath the plot (the view
timeline: which primary served when). ``render`` returns the whole SVG document as text; every
label is escaped. The output depends only on the input (no clock, no randomness), so the same
run draws the same picture and tests can assert on it.

Readable in any browser, GitHub's Markdown preview and most Markdown viewers (as an image link).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Final

PALETTE: Final = ("#1f6feb", "#cf222e", "#2da44e", "#8250df", "#bf8700", "#0a7f8c", "#6e7781")
WIDTH_PX: Final = 900
PLOT_HEIGHT_PX: Final = 260
LANE_HEIGHT_PX: Final = 26
MARGIN_LEFT_PX: Final = 64
MARGIN_RIGHT_PX: Final = 20
MARGIN_TOP_PX: Final = 40
AXIS_LABELS_PX: Final = 44
FONT: Final = "font-family='system-ui, sans-serif' font-size='12'"


@dataclass(frozen=True, slots=True)
class Series:
    """One line: ``points`` are (x, y) in data units, in x order."""

    name: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Marker:
    """A vertical line at ``x`` with a label (a fault)."""

    x: float
    label: str
    colour: str = "#1d2330"


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch ``[start, end)`` of the lane beneath the plot, labelled and coloured by key."""

    start: float
    end: float
    label: str
    key: str


@dataclass(frozen=True, slots=True)
class Chart:
    """What to draw. ``x_range``/``y_range`` default to the data's extent (y from 0)."""

    title: str
    x_label: str
    y_label: str
    series: Sequence[Series]
    markers: Sequence[Marker] = ()
    lane: Sequence[Span] = ()
    lane_title: str = ""
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None
    notes: Sequence[str] = field(default_factory=tuple)
    x_ticks: Sequence[tuple[float, str]] = ()
    """Explicit x ticks (value, label) instead of round numbers (a non-linear axis)."""
    y_log: bool = False
    """A logarithmic y axis (values must be positive; ticks at powers of ten)."""


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values covering ``[low, high]`` (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _extent(chart: Chart) -> tuple[float, float, float, float]:
    xs = [x for s in chart.series for x, _ in s.points] + [m.x for m in chart.markers]
    xs += [v for span in chart.lane for v in (span.start, span.end)]
    ys = [y for s in chart.series for _, y in s.points]
    if chart.y_log:
        positive = [y for y in ys if y > 0] or [1.0]
        low = 10 ** math.floor(math.log10(min(positive)))
        high = 10 ** math.ceil(math.log10(max(positive)))
        x0, x1 = chart.x_range or ((min(xs), max(xs)) if xs else (0.0, 1.0))
        return x0, max(x1, x0 + 1.0), low, max(high, low * 10)
    x0, x1 = chart.x_range or ((min(xs), max(xs)) if xs else (0.0, 1.0))
    y0, y1 = chart.y_range or (0.0, max(ys) if ys else 1.0)
    if x1 <= x0:
        x1 = x0 + 1.0
    if y1 <= y0:
        y1 = y0 + 1.0
    return x0, x1, y0, y1 * 1.05 if chart.y_range is None else y1


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:g}"


class _Canvas:
    def __init__(self, chart: Chart) -> None:
        self.x0, self.x1, self.y0, self.y1 = _extent(chart)
        self.log = chart.y_log
        self.left = MARGIN_LEFT_PX
        self.right = WIDTH_PX - MARGIN_RIGHT_PX
        self.top = MARGIN_TOP_PX
        self.bottom = MARGIN_TOP_PX + PLOT_HEIGHT_PX
        self.parts: list[str] = []

    def x(self, value: float) -> float:
        return self.left + (value - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def y(self, value: float) -> float:
        if self.log:
            low, high = math.log10(self.y0), math.log10(self.y1)
            fraction = (math.log10(max(value, self.y0)) - low) / (high - low)
        else:
            fraction = (value - self.y0) / (self.y1 - self.y0)
        return self.bottom - fraction * (self.bottom - self.top)

    def y_ticks(self) -> list[float]:
        if not self.log:
            return nice_ticks(self.y0, self.y1)
        low, high = round(math.log10(self.y0)), round(math.log10(self.y1))
        return [10.0**power for power in range(low, high + 1)]

    def add(self, text: str) -> None:
        self.parts.append(text)


def _axes(canvas: _Canvas, chart: Chart) -> None:
    c = canvas
    for tick in c.y_ticks():
        y = c.y(tick)
        c.add(f"<line x1='{c.left}' x2='{c.right}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e6e8ec'/>")
        c.add(
            f"<text x='{c.left - 6}' y='{y + 4:.1f}' text-anchor='end' {FONT}>{_fmt(tick)}</text>"
        )
    x_ticks = chart.x_ticks or [(tick, _fmt(tick)) for tick in nice_ticks(c.x0, c.x1, 10)]
    for tick, label in x_ticks:
        x = c.x(tick)
        c.add(
            f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{c.bottom}' y2='{c.bottom + 4}' "
            "stroke='#6e7781'/>"
        )
        c.add(
            f"<text x='{x:.1f}' y='{c.bottom + 17}' text-anchor='middle' {FONT}>"
            f"{escape(label)}</text>"
        )
    c.add(f"<rect x='{c.left}' y='{c.top}' width='{c.right - c.left}' "
          f"height='{c.bottom - c.top}' fill='none' stroke='#6e7781'/>")  # fmt: skip
    c.add(f"<text x='{(c.left + c.right) / 2:.0f}' y='{c.bottom + 34}' text-anchor='middle' "
          f"{FONT}>{escape(chart.x_label)}</text>")  # fmt: skip
    middle = (c.top + c.bottom) / 2
    c.add(f"<text transform='translate(14 {middle:.0f}) rotate(-90)' text-anchor='middle' "
          f"{FONT}>{escape(chart.y_label)}</text>")  # fmt: skip


def _series(canvas: _Canvas, chart: Chart) -> None:
    c = canvas
    for index, series in enumerate(chart.series):
        colour = PALETTE[index % len(PALETTE)]
        points = " ".join(f"{c.x(x):.1f},{c.y(y):.1f}" for x, y in series.points)
        dash = " stroke-dasharray='6 4'" if series.dashed else ""
        if points:
            c.add(f"<polyline points='{points}' fill='none' stroke='{colour}' "
                  f"stroke-width='1.8'{dash}/>")  # fmt: skip
        legend_x = c.left + 8 + index * 170
        c.add(f"<line x1='{legend_x}' x2='{legend_x + 18}' y1='{c.top - 12}' y2='{c.top - 12}' "
              f"stroke='{colour}' stroke-width='3'{dash}/>")  # fmt: skip
        c.add(f"<text x='{legend_x + 24}' y='{c.top - 8}' {FONT}>{escape(series.name)}</text>")


def _markers(canvas: _Canvas, chart: Chart) -> None:
    c = canvas
    for index, marker in enumerate(chart.markers):
        x = c.x(marker.x)
        label_y = c.top + 14 + (index % 4) * 14
        c.add(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{c.top}' y2='{c.bottom}' "
              f"stroke='{marker.colour}' stroke-dasharray='4 3'/>")  # fmt: skip
        c.add(f"<text x='{x + 4:.1f}' y='{label_y}' fill='{marker.colour}' {FONT}>"
              f"{escape(marker.label)}</text>")  # fmt: skip


def _lane(canvas: _Canvas, chart: Chart, top: float) -> None:
    c = canvas
    keys = list(dict.fromkeys(span.key for span in chart.lane))
    c.add(f"<text x='{c.left - 6}' y='{top + 17}' text-anchor='end' {FONT}>"
          f"{escape(chart.lane_title)}</text>")  # fmt: skip
    for span in chart.lane:
        x0 = c.x(max(span.start, c.x0))
        x1 = c.x(min(span.end, c.x1))
        if x1 <= x0:
            continue
        colour = PALETTE[keys.index(span.key) % len(PALETTE)]
        c.add(f"<rect x='{x0:.1f}' y='{top}' width='{max(1.0, x1 - x0):.1f}' "
              f"height='{LANE_HEIGHT_PX - 4}' fill='{colour}' opacity='0.85'/>")  # fmt: skip
        if x1 - x0 > 8 * len(span.label):
            c.add(f"<text x='{x0 + 4:.1f}' y='{top + 15}' fill='#fff' {FONT}>"
                  f"{escape(span.label)}</text>")  # fmt: skip


def render(chart: Chart) -> str:
    """The chart as a standalone SVG document."""
    canvas = _Canvas(chart)
    lane_top = canvas.bottom + AXIS_LABELS_PX
    height = lane_top + (LANE_HEIGHT_PX + 8 if chart.lane else 0) + 14 * len(chart.notes) + 8
    canvas.add(f"<text x='{MARGIN_LEFT_PX}' y='18' font-weight='600' "
               f"{FONT.replace('12', '14')}>{escape(chart.title)}</text>")  # fmt: skip
    _axes(canvas, chart)
    _series(canvas, chart)
    _markers(canvas, chart)
    if chart.lane:
        _lane(canvas, chart, lane_top)
    note_y = height - 8 - 14 * (len(chart.notes) - 1)
    for index, note in enumerate(chart.notes):
        canvas.add(f"<text x='{MARGIN_LEFT_PX}' y='{note_y + 14 * index}' fill='#6e7781' {FONT}>"
                   f"{escape(note)}</text>")  # fmt: skip
    body = "\n".join(canvas.parts)
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH_PX}' height='{height:.0f}' "
        f"viewBox='0 0 {WIDTH_PX} {height:.0f}'>\n<rect width='100%' height='100%' fill='#fff'/>"
        f"\n{body}\n</svg>\n"
    )


def bucket_counts(times: Sequence[float], start: float, end: float, width: float) -> list[float]:
    """How many of ``times`` fall in each ``width``-wide bucket of ``[start, end)``."""
    count = max(1, math.ceil((end - start) / width))
    buckets = [0.0] * count
    for value in times:
        index = int((value - start) // width)
        if 0 <= index < count:
            buckets[index] += 1
    return buckets
