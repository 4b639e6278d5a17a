"""SVG charts drawn on the server: daily series as lines or bars, with threshold lines.

SYNOPSIS
    line_chart(title, description, dates, series, thresholds=(), unit="") -> str (SVG)
    bar_chart(title, description, dates, series, unit="") -> str (SVG)

DESCRIPTION
    A pure function of its numbers: the same input gives byte-for-byte the same SVG, so the
    pages are cacheable and the tests compare text. Nothing is fetched and nothing runs: no
    script, no external font or style sheet. The chart is one <svg role="img"> with a <title>
    and a <desc> (aria-labelledby names both), an x axis labelled with dates (every label
    that fits), a y axis with rounded ticks from 0, one polyline (or group of bars) per
    series, each with its own dash pattern as well as colour, so the series stay apart for a
    reader who does not see colour, and dashed horizontal threshold lines labelled with their
    name and value. A day with a value between two without (or a series of one day) is a
    marker with its value written above it. The SVG has no width or height of its own: it
    fills the width of its container and keeps the viewBox's proportions. The y axis ticks
    are multiples of a round step (1, 2, 2.5 or 5 x 10^n; whole numbers for counts). The
    page shows the same numbers as a table beside it: the chart is a picture of that table,
    never the only place a number is.

    Every text that reaches the SVG (title, description, series names, dates, threshold
    labels) is XML-escaped; numbers are formatted by the code, never taken as text. Dates are
    shown as given (YYYY-MM-DD); only the month and day are drawn under the axis.

FAILURE
    ValueError when a series has not one value per date; a chart of no dates is an empty
    frame that says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

WIDTH = 720
HEIGHT = 260
LEFT = 56
RIGHT = 16
TOP = 16
BOTTOM = 44
# Colours with at least 3:1 contrast against white (WCAG 1.4.11, graphics); each series
# also has its own dash pattern, so colour is never the only difference.
COLOURS = ("#1f5fa8", "#b3261e", "#2e7d32", "#6a3d9a", "#8a5a00", "#00707a", "#444444")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "1 2", "10 4", "4 4")
THRESHOLD_COLOUR = "#8a1c1c"


@dataclass(frozen=True)
class Series:
    """One named row of numbers, one per date; None (line charts) is a day without a value,
    drawn as a gap rather than as 0."""

    name: str
    values: Sequence[float | None]


@dataclass(frozen=True)
class Threshold:
    label: str
    value: float


def _number(value: float) -> str:
    """A coordinate or value as short, stable text: 12, 12.5, 0.25."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


MAX_INTERVALS = 5  # grid lines above 0 on the y axis, at most


def _ticks(highest: float, whole: bool = False) -> tuple[float, float]:
    """The y axis's (top, step): the smallest round step (1, 2, 2.5 or 5 x 10^n) that
    reaches `highest` in at most MAX_INTERVALS steps, and the top that many steps up, so
    every tick is a multiple of a round step (0, 0.5, 1, 1.5: never 0.62 or 1.88). With
    `whole` (counts) the step is at least 1."""
    if highest <= 0:
        return (1.0, 1.0) if whole else (1.0, 0.25)
    power = 10.0 ** math.floor(math.log10(highest / MAX_INTERVALS))
    for mantissa in (1, 2, 2.5, 5, 10, 20):
        step = mantissa * power
        if whole and step < 1:
            continue
        # a hair under, so 0.3 / 0.1 = 2.9999999999999996 is 3 steps and 1.1 / 0.1 is 11
        count = max(1, math.ceil(highest / step - 1e-9))
        if count <= MAX_INTERVALS:
            return step * count, step
    return highest, highest  # pragma: no cover - 20 x power always reaches it


def _tick_text(value: float, step: float) -> str:
    """A tick's value with as many decimals as its step needs (0.025 stays 0.025)."""
    decimals = next(d for d in range(0, 12) if abs(round(step, d) - step) < step * 1e-6)
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


def _check(dates: Sequence[str], series: Sequence[Series]) -> None:
    for one in series:
        if len(one.values) != len(dates):
            raise ValueError(
                f"series {one.name!r} has {len(one.values)} values for {len(dates)} dates"
            )


def _frame(title: str, description: str, chart_id: str) -> list[str]:
    return [
        # No width or height: the chart fills the width it is given and its height follows
        # from the viewBox (an <img>-like 720:260), so it scales with the page.
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="xMidYMid meet" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" class="chart" '
        'style="display:block;width:100%;height:auto">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
    ]


def _chart_id(title: str) -> str:
    """An id for the title and desc elements, from the title (stable, XML-name safe)."""
    word = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")
    return "chart-" + ("-".join(filter(None, word.split("-")))[:40] or "untitled")


def _axes(
    dates: Sequence[str], ticks: tuple[float, float], unit: str, slot: float, bars: bool
) -> list[str]:
    """Y ticks with grid lines, the x axis and its date labels."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    top, tick = ticks
    count = round(top / tick)
    parts = ['<g class="axes" font-family="sans-serif" font-size="11" fill="#222222">']
    for step in range(count + 1):
        value = tick * step
        y = TOP + plot_h - plot_h * step / count
        parts.append(
            f'<line x1="{LEFT}" y1="{_number(y)}" x2="{LEFT + plot_w}" y2="{_number(y)}" '
            'stroke="#d0d0d0" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{_number(y + 4)}" text-anchor="end">'
            f"{escape(_tick_text(value, tick) + unit)}</text>"
        )
    parts.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        'stroke="#222222" stroke-width="1"/>'
    )
    every = max(1, math.ceil(len(dates) / 10))  # at most about ten labels fit
    for index, date in enumerate(dates):
        if index % every and index != len(dates) - 1:
            continue
        x = LEFT + slot * (index + 0.5) if bars else LEFT + slot * index
        parts.append(
            f'<text x="{_number(x)}" y="{TOP + plot_h + 16}" text-anchor="middle">'
            f"{escape(date[5:] if len(date) == 10 else date)}</text>"
        )
    parts.append("</g>")
    return parts


def _legend(series: Sequence[Series], bars: bool = False) -> list[str]:
    parts = ['<g class="legend" font-family="sans-serif" font-size="11" fill="#222222">']
    x = LEFT
    y = HEIGHT - 10
    for index, one in enumerate(series):
        colour, dash = COLOURS[index % len(COLOURS)], DASHES[index % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        if bars:
            parts.append(f'<rect x="{x + 4}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        else:
            parts.append(
                f'<line x1="{x}" y1="{y - 4}" x2="{x + 18}" y2="{y - 4}" stroke="{colour}" '
                f'stroke-width="2"{dash_attr}/>'
            )
        parts.append(f'<text x="{x + 22}" y="{y}">{escape(one.name)}</text>')
        x += 30 + 7 * len(one.name)
    parts.append("</g>")
    return parts


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The stretches of consecutive days that have a value, as (day index, value)."""
    runs: list[list[tuple[int, float]]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((index, float(value)))
    return [run for run in runs if run]


def line_chart(
    title: str,
    description: str,
    dates: Sequence[str],
    series: Sequence[Series],
    thresholds: Sequence[Threshold] = (),
    unit: str = "",
) -> str:
    """A line chart of `series` over `dates` with labelled horizontal `thresholds`."""
    _check(dates, series)
    chart_id = _chart_id(title)
    parts = _frame(title, description, chart_id)
    if not dates:
        parts.append(
            f'<text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle" '
            'font-family="sans-serif" font-size="13" fill="#222222">No days to show</text>'
        )
        return "\n".join([*parts, "</svg>"])
    highest = max(
        [
            0.0,
            *(float(v) for one in series for v in one.values if v is not None),
            *(t.value for t in thresholds),
        ]
    )
    ticks = _ticks(highest * 1.05 if thresholds else highest)
    top = ticks[0]
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(dates) - 1)
    parts += _axes(dates, ticks, unit, slot, bars=False)

    def y_of(value: float) -> float:
        return TOP + plot_h - plot_h * float(value) / top

    def x_of(index: int) -> float:
        return LEFT + slot * index if len(dates) > 1 else LEFT + plot_w / 2

    for threshold in thresholds:
        y = _number(y_of(threshold.value))
        label = f"{threshold.label} {_number(threshold.value)}{unit}"
        parts.append(
            f'<g class="threshold"><line x1="{LEFT}" y1="{y}" x2="{LEFT + plot_w}" y2="{y}" '
            f'stroke="{THRESHOLD_COLOUR}" stroke-width="1.5" stroke-dasharray="4 3"/>'
            f'<text x="{LEFT + plot_w - 4}" y="{_number(y_of(threshold.value) - 4)}" '
            f'text-anchor="end" font-family="sans-serif" font-size="11" '
            f'fill="{THRESHOLD_COLOUR}">{escape(label)}</text></g>'
        )
    for index, one in enumerate(series):
        colour, dash = COLOURS[index % len(COLOURS)], DASHES[index % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        for run in _runs(one.values):
            points = " ".join(f"{_number(x_of(i))},{_number(y_of(value))}" for i, value in run)
            if len(run) == 1:  # a lone day between gaps: a marker and its value, as a
                # line needs two days and a bare dot is easy to miss
                x, y = points.split(",")
                value = run[0][1]
                parts.append(
                    f'<circle class="series" data-name={quoteattr(one.name)} cx="{x}" '
                    f'cy="{y}" r="5" fill="{colour}" stroke="#ffffff" stroke-width="1.5"/>'
                )
                parts.append(
                    f'<text class="value" x="{x}" y="{_number(float(y) - 9)}" '
                    'text-anchor="middle" font-family="sans-serif" font-size="11" '
                    f'fill="{colour}">{escape(_number(value) + unit)}</text>'
                )
                continue
            parts.append(
                f'<polyline class="series" data-name={quoteattr(one.name)} '
                f'fill="none" stroke="{colour}" stroke-width="2"{dash_attr} points="{points}"/>'
            )
    parts += _legend(series)
    return "\n".join([*parts, "</svg>"])


def bar_chart(
    title: str,
    description: str,
    dates: Sequence[str],
    series: Sequence[Series],
    unit: str = "",
) -> str:
    """Grouped bars of `series` per date (one bar per series and day)."""
    _check(dates, series)
    chart_id = _chart_id(title)
    parts = _frame(title, description, chart_id)
    if not dates or not series:
        parts.append(
            f'<text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle" '
            'font-family="sans-serif" font-size="13" fill="#222222">No days to show</text>'
        )
        return "\n".join([*parts, "</svg>"])
    highest = max([0.0, *(float(v or 0) for one in series for v in one.values)])
    ticks = _ticks(highest, whole=all(float(v or 0).is_integer() for o in series for v in o.values))
    top = ticks[0]
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / len(dates)
    bar = max(1.0, slot * 0.8 / len(series))
    parts += _axes(dates, ticks, unit, slot, bars=True)
    for index, one in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        parts.append(f'<g class="series" data-name={quoteattr(one.name)} fill="{colour}">')
        for day, value in enumerate(one.values):
            height = plot_h * float(value or 0) / top
            x = LEFT + slot * day + slot * 0.1 + bar * index
            parts.append(
                f'<rect x="{_number(x)}" y="{_number(TOP + plot_h - height)}" '
                f'width="{_number(bar)}" height="{_number(height)}"/>'
            )
        parts.append("</g>")
    parts += _legend(series, bars=True)
    return "\n".join([*parts, "</svg>"])
