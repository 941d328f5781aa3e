"""``spendbrake export``: the ledger's calls or events as CSV or JSON lines, streamed row by row.

Columns are the ledger's own (see docs/ledger.md), so an export reads like the table it came
from; a call's money is there in nanos and, for spreadsheets, as exact dollars beside it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from spendbrake.ledger_reads import Reader, rows_of
from spendbrake.money import format_usd_exact
from spendbrake.sqlite_brakes import iso

TABLES = ("calls", "events")
FORMATS = ("csv", "jsonl")
_DOLLARS_OF = {"held_nanos": "held_usd", "actual_nanos": "actual_usd"}  # calls' money columns


def day_start(day: str, tz: ZoneInfo) -> str:
    """The UTC instant (as the ledger writes it) of a calendar day's local midnight."""
    start = date.fromisoformat(day)
    return iso(datetime(start.year, start.month, start.day, tzinfo=tz))


def export(ledger: Reader, table: str, since_day: str, tz: ZoneInfo, fmt: str, out: TextIO) -> int:
    """Write the rows of ``table`` from ``since_day`` on to ``out``; returns how many."""
    since = since_day if table == "calls" else day_start(since_day, tz)
    count = 0
    with ledger.snapshot() as conn:
        names, rows = rows_of(conn, table, since)
        money = [i for i, name in enumerate(names) if name in _DOLLARS_OF]
        header = [*names, *(_DOLLARS_OF[names[i]] for i in money)]
        write = _csv_writer(out, header) if fmt == "csv" else _jsonl_writer(out, header)
        for row in rows:
            write((*row, *(_dollars(row[i]) for i in money)))
            count += 1
    return count


def _dollars(nanos: int | None) -> str | None:
    return None if nanos is None else format_usd_exact(nanos)


def _csv_writer(out: TextIO, header: list[str]) -> Callable[[tuple[Any, ...]], None]:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    return writer.writerow


def _jsonl_writer(out: TextIO, header: list[str]) -> Callable[[tuple[Any, ...]], None]:
    def write(row: tuple[Any, ...]) -> None:
        out.write(json.dumps(dict(zip(header, row, strict=True))) + "\n")

    return write
