"""txmail/reports/charts.py: server-drawn SVG, parsed back with xml.etree."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET

import pytest

from txmail.reports.charts import Series, Threshold, bar_chart, line_chart

SVG = "{http://www.w3.org/2000/svg}"
DATES = ["2026-12-01", "2026-12-02", "2026-12-03"]


def test_a_line_chart_is_an_accessible_image_with_axes_and_thresholds() -> None:
    text = line_chart(
        "Bounce rate",
        "Hard bounces per day, percent",
        DATES,
        [Series("bounce rate", [0.0, 1.5, 3.0])],
        thresholds=[Threshold("suspension at", 2.0)],
        unit="%",
    )
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and title.text == "Bounce rate"
    assert desc is not None and desc.text == "Hard bounces per day, percent"
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert "12-01" in labels and "12-03" in labels  # dates on the x axis
    assert "suspension at 2%" in labels
    assert "0%" in labels  # the y axis starts at 0
    lines = [p for p in root.iter(f"{SVG}polyline")]
    assert len(lines) == 1 and lines[0].get("data-name") == "bounce rate"
    points = lines[0].get("points", "").split()
    assert len(points) == 3
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[0] > ys[1] > ys[2]  # a higher rate is drawn higher


def test_text_is_escaped_and_output_is_deterministic() -> None:
    evil = '<script>alert("x")</script> & "quotes"'
    series = [Series(evil, [1, 2, 3]), Series("delivered", [3, 2, 1])]
    first = bar_chart(evil, evil, DATES, series)
    assert first == bar_chart(evil, evil, DATES, series)
    assert "<script>" not in first
    root = ET.fromstring(first)  # well-formed despite the text
    assert root.find(f"{SVG}title").text == evil  # type: ignore[union-attr]
    groups = [g for g in root.iter(f"{SVG}g") if g.get("class") == "series"]
    assert [g.get("data-name") for g in groups] == [evil, "delivered"]
    assert all(len(list(g)) == 3 for g in groups)  # one bar per day
    assert not list(root.iter(f"{SVG}script"))


def test_empty_and_mismatched_input() -> None:
    root = ET.fromstring(line_chart("Nothing", "no days", [], []))
    assert "No days to show" in [t.text for t in root.iter(f"{SVG}text")]
    ET.fromstring(line_chart("Zero", "all zero", DATES, [Series("sent", [0, 0, 0])]))
    with pytest.raises(ValueError, match="2 values for 3 dates"):
        line_chart("Bad", "bad", DATES, [Series("sent", [1, 2])])


def test_a_day_without_a_value_is_a_gap_not_a_zero() -> None:
    dates = [f"2026-12-0{n}" for n in range(1, 7)]
    text = line_chart("Gaps", "gaps", dates, [Series("rate", [1.0, 2.0, None, 3.0, None, None])])
    root = ET.fromstring(text)
    (line,) = root.iter(f"{SVG}polyline")
    assert len(line.get("points", "").split()) == 2  # days 1 and 2
    (dot,) = root.iter(f"{SVG}circle")  # day 4 alone
    assert dot.get("data-name") == "rate"


def y_labels(root: ET.Element) -> list[str]:
    axes = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "axes")
    return [t.text or "" for t in axes.iter(f"{SVG}text") if t.get("text-anchor") == "end"]


@pytest.mark.parametrize(
    "highest", [0.01, 0.07, 0.105, 0.3, 0.62, 1, 1.1, 2.4, 3, 7, 9.99, 97, 1234]
)
def test_the_y_axis_ticks_are_round_steps(highest: float) -> None:
    """Issue 22's screenshots: a top of 2.5 in four steps gave ticks 0.62% and 1.88%."""
    root = ET.fromstring(
        line_chart("Rate", "rate", DATES, [Series("rate", [0, highest / 2, highest])], unit="%")
    )
    values = [float(label.rstrip("%")) for label in y_labels(root)]
    step = values[1] - values[0]
    assert values[0] == 0 and values[-1] >= highest and 2 <= len(values) - 1 <= 5
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    assert any(abs(mantissa - m) < 1e-6 for m in (1, 2, 2.5, 5)), values
    assert all(abs(b - a - step) < step * 1e-6 for a, b in itertools.pairwise(values))


def test_a_top_of_two_and_a_half_is_ticked_by_halves() -> None:
    root = ET.fromstring(line_chart("Tag", "t", DATES, [Series("r", [0.5, 1.2, 2.4])], unit="%"))
    assert y_labels(root) == ["0%", "0.5%", "1.0%", "1.5%", "2.0%", "2.5%"]
    counts = ET.fromstring(bar_chart("Sent", "s", DATES, [Series("sent", [1, 0, 1])]))
    assert y_labels(counts) == ["0", "1"]  # counts: no 0.25 of a message


def test_a_chart_fills_its_container_and_keeps_its_proportions() -> None:
    for text in (
        line_chart("L", "l", DATES, [Series("r", [1, 2, 3])]),
        bar_chart("B", "b", DATES, [Series("s", [1, 2, 3])]),
    ):
        root = ET.fromstring(text)
        assert root.get("width") is None and root.get("height") is None
        assert root.get("viewBox") == "0 0 720 260"
        assert "width:100%" in (root.get("style") or "")


def test_a_single_day_is_a_visible_marker_with_its_value() -> None:
    root = ET.fromstring(
        line_chart("One day", "one", ["2026-12-07"], [Series("bounce rate", [2.5])], unit="%")
    )
    (marker,) = root.iter(f"{SVG}circle")
    assert float(marker.get("r", "0")) >= 4
    values = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "value"]
    assert values == ["2.5%"]
