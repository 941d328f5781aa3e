"""What ``spendbrake report`` shows: spend since a calendar day, per agent, model, day or
session, with totals; per model also how the estimates behind the holds compared with the bill.

Amounts are what the calls cost as they happened: a ``spendbrake reset`` forgives a window for
its limits, but the calls it forgave were still billed, so they still count here.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TextIO

from rich.table import Table

from spendbrake.ledger import EstimateAccuracy
from spendbrake.ledger_reads import GROUPINGS, Reader, SpendRow, spend_by
from spendbrake.money import format_usd, format_usd_exact

BY = tuple(GROUPINGS)
_DAYS = re.compile(r"(\d+)d")


def since_day(text: str, today: date) -> str:
    """``7d``: the last 7 calendar days, today included; ``2026-03-01``: from that day on."""
    if match := _DAYS.fullmatch(text.strip()):
        days = int(match[1])
        if days < 1:
            raise ValueError(f"at least one day (1d is today), not {text!r}")
        return (today - timedelta(days=days - 1)).isoformat()
    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise ValueError(
            f"expected a number of days (7d) or a date (2026-03-01), not {text!r}"
        ) from None


@dataclass(frozen=True)
class Report:
    since: str  # the first calendar day counted
    timezone: str
    by: str  # one of BY
    rows: list[SpendRow]
    estimates: list[EstimateAccuracy]  # per model; only with by == "model"

    @property
    def totals(self) -> SpendRow:
        rows = self.rows
        return SpendRow(
            key=("total",),
            calls=sum(r.calls for r in rows),
            blocked=sum(r.blocked for r in rows),
            input_tokens=sum(r.input_tokens for r in rows),
            output_tokens=sum(r.output_tokens for r in rows),
            spent_nanos=sum(r.spent_nanos for r in rows),
            in_flight_nanos=sum(r.in_flight_nanos for r in rows),
        )


def build(ledger: Reader, by: str, since: str, timezone: str) -> Report:
    with ledger.snapshot() as conn:
        rows = spend_by(conn, by, since)
        estimates = ledger.estimate_accuracy(since) if by == "model" else []
    return Report(since, timezone, by, rows, estimates)


def _key_names(by: str) -> list[str]:
    return [name for _, name in GROUPINGS[by]]


def _spend_fields(row: SpendRow) -> dict[str, Any]:
    return {
        "calls": row.calls,
        "blocked": row.blocked,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "spent_usd": format_usd_exact(row.spent_nanos),
        "in_flight_usd": format_usd_exact(row.in_flight_nanos),
    }


def as_json(report: Report) -> dict[str, Any]:
    names = _key_names(report.by)
    document: dict[str, Any] = {
        "since": report.since,
        "timezone": report.timezone,
        "by": report.by,
        "rows": [
            dict(zip(names, row.key, strict=True)) | _spend_fields(row) for row in report.rows
        ],
        "totals": _spend_fields(report.totals),
    }
    if report.by == "model":  # the estimates, as 'report' has always shown them
        document["models"] = [
            {
                "provider": e.provider,
                "model": e.model,
                "calls": e.calls,
                "held_usd": format_usd_exact(e.held_nanos),
                "actual_usd": format_usd_exact(e.actual_nanos),
                "estimated_input_tokens": e.estimated_input_tokens,
                "actual_input_tokens": e.actual_input_tokens,
                "max_input_ratio": round(e.max_input_ratio, 4),
            }
            for e in report.estimates
        ]
    return document


def write_csv(report: Report, out: TextIO) -> None:
    """One line per row, money as exact decimal strings; no totals line (sum the column)."""
    names = _key_names(report.by)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*names, *_spend_fields(report.totals)])
    for row in report.rows:
        writer.writerow([*row.key, *_spend_fields(row).values()])


_ESTIMATE_COLUMNS = ("actual / held", "input actual / estimated", "worst call")


def _estimate_cells(estimates: list[EstimateAccuracy]) -> tuple[str, str, str]:
    """The estimates of one model (or of all, for the totals): blank without any."""
    if not estimates:
        return ("", "", "")
    held = sum(e.held_nanos for e in estimates)
    actual = sum(e.actual_nanos for e in estimates)
    estimated_input = sum(e.estimated_input_tokens for e in estimates)
    actual_input = sum(e.actual_input_tokens for e in estimates)
    return (
        f"{actual / max(held, 1):.1%}",
        f"{actual_input / max(estimated_input, 1):.1%}",
        f"{max(e.max_input_ratio for e in estimates):.1%}",
    )


def table(report: Report) -> Table:
    names = _key_names(report.by)
    estimated = report.by == "model"
    result = Table(
        title=f"spendbrake: spend by {report.by} since {report.since} ({report.timezone})",
        caption=(
            "actual / held: what was billed against the worst case held; input actual / "
            "estimated above 100% means an estimate ran low"
            if estimated
            else None
        ),
    )
    numbers = ["calls", "blocked", "input tokens", "output tokens", "spent", "in flight"]
    for column in [*names, *numbers, *(_ESTIMATE_COLUMNS if estimated else ())]:
        result.add_column(column, justify="left" if column in names else "right")
    by_model = {(e.provider, e.model): e for e in report.estimates}

    def cells(row: SpendRow) -> list[str]:
        return [
            f"{row.calls:,}",
            f"{row.blocked:,}",
            f"{row.input_tokens:,}",
            f"{row.output_tokens:,}",
            format_usd(row.spent_nanos),
            format_usd(row.in_flight_nanos),
        ]

    for row in report.rows:
        shown = [
            "(unnamed)" if name == "session" and not value else value
            for name, value in zip(names, row.key, strict=True)
        ]
        estimate = by_model.get((row.key[0], row.key[-1])) if estimated else None
        extra = _estimate_cells([estimate] if estimate else []) if estimated else ()
        result.add_row(*shown, *cells(row), *extra)
    result.add_section()
    totals = _estimate_cells(report.estimates) if estimated else ()
    result.add_row("total", *[""] * (len(names) - 1), *cells(report.totals), *totals)
    return result
