"""The status page's chart: cumulative spend per agent over the local day, as plain SVG."""

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from spendbrake.svg_chart import PALETTE, WIDTH, nice_step, spend_chart

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 3, 14, tzinfo=UTC)
END = START + timedelta(days=1)
NOW = START + timedelta(hours=12)
_LEFT, _PLOT_WIDTH = 80, WIDTH - 80 - 230


def parsed(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def lines(root: ET.Element) -> dict[str, str]:
    return {p.attrib["data-agent"]: p.attrib["d"] for p in root.iter(f"{SVG}path")}


def test_one_line_per_agent_in_its_own_colour_named_in_the_legend_with_its_total() -> None:
    series = {
        "research-bot": [(START + timedelta(hours=9), 10_000_000), (NOW, 7_000_000)],
        "summarizer": [(START + timedelta(hours=6), 300_000_000)],
    }
    root = parsed(spend_chart(series, START, END, NOW, ZoneInfo("UTC")))
    paths = list(root.iter(f"{SVG}path"))
    assert [p.attrib["data-agent"] for p in paths] == ["research-bot", "summarizer"]
    assert [p.attrib["stroke"] for p in paths] == list(PALETTE[:2])
    legend = [t.text for t in root.iter(f"{SVG}text") if t.attrib.get("class") == "legend"]
    assert legend == ["research-bot $0.017", "summarizer $0.30"]
    assert root.find(f"{SVG}title").text == "Spend today, per agent"  # type: ignore[union-attr]


def test_a_line_steps_up_by_each_call_when_it_started_and_runs_flat_to_now() -> None:
    # $0.30 in all: the axis tops out at $0.30 (steps of $0.10), so the steps are easy to place.
    series = {"a": [(START + timedelta(hours=6), 100_000_000), (NOW, 200_000_000)]}
    root = parsed(spend_chart(series, START, END, NOW, ZoneInfo("UTC")))
    top, bottom = 16, 300 - 34
    quarter, half = _LEFT + _PLOT_WIDTH / 4, _LEFT + _PLOT_WIDTH / 2
    third_up = bottom - (bottom - top) / 3
    assert lines(root)["a"] == (
        f"M{_LEFT} {bottom:.1f} H{round(quarter)} V{third_up:.1f} H{round(half)} V{top:.1f} "
        f"H{half:.1f}"
    )
    labels = [t.text for t in root.iter(f"{SVG}text") if t.text and t.text.startswith("$")]
    assert labels == ["$0.00", "$0.10", "$0.20", "$0.30"]


def test_calls_in_one_pixel_column_are_one_step_so_a_busy_day_stays_small() -> None:
    busy = [(START + timedelta(seconds=s), 1_000) for s in range(0, 43_200, 2)]  # 21,600 calls
    root = parsed(spend_chart({"busy": busy}, START, END, NOW, ZoneInfo("UTC")))
    steps = lines(root)["busy"].count("V")
    assert steps <= _PLOT_WIDTH // 2 + 1  # half a day: at most one step per pixel column
    assert lines(root)["busy"].endswith(f"H{_LEFT + _PLOT_WIDTH / 2:.1f}")


def test_names_are_escaped_and_no_asset_is_fetched() -> None:
    name = '<script>alert("x")</script>&co'
    svg = spend_chart({name: [(NOW, 5)]}, START, END, NOW, ZoneInfo("UTC"))
    root = parsed(svg)
    assert list(lines(root)) == [name]  # intact once parsed: it was escaped, not cut
    assert "<script>" not in svg
    assert not re.search(r"(href|src)=", svg)


def test_a_day_without_spend_says_so_on_a_readable_axis() -> None:
    root = parsed(spend_chart({}, START, END, NOW, ZoneInfo("UTC")))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "no spend yet today" in texts
    assert "$0.01" in texts  # an axis to a cent


def test_the_axis_fits_the_biggest_spender_however_small() -> None:
    series = {"a": [(NOW, 13_500)], "b": [(NOW, 112_500)]}  # $0.0000135 and $0.0001125
    root = parsed(spend_chart(series, START, END, NOW, ZoneInfo("UTC")))
    labels = [t.text for t in root.iter(f"{SVG}text") if t.text and t.text.startswith("$")]
    assert labels == ["$0.00", "$0.00005", "$0.0001", "$0.00015"]


def test_on_a_23_hour_day_the_hour_ticks_follow_the_local_clock() -> None:
    berlin = ZoneInfo("Europe/Berlin")  # 2026-03-29: clocks jump from 02:00 to 03:00
    start = datetime(2026, 3, 29, tzinfo=berlin)
    end = datetime(2026, 3, 30, tzinfo=berlin)
    root = parsed(spend_chart({}, start, end, end, berlin))
    ticks = {
        t.text: float(t.attrib["x"]) for t in root.iter(f"{SVG}text") if ":00" in (t.text or "")
    }
    assert ticks["00:00"] == _LEFT
    assert ticks["03:00"] == round(_LEFT + _PLOT_WIDTH * 2 / 23, 1)  # two real hours in
    assert ticks["24:00"] == _LEFT + _PLOT_WIDTH


def test_gridlines_are_one_two_or_five_times_a_power_of_ten() -> None:
    assert nice_step(17_000_000) == 5_000_000
    assert nice_step(300_000_000) == 100_000_000
    assert nice_step(10_000_000) == 5_000_000
    assert nice_step(7) == 2
