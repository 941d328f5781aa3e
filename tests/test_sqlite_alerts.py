"""Alerts in the ledger: exactly one claimant per alert, however many proxies ask."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from ledger_hammer import intent
from spendbrake import alerts
from spendbrake.alerts_config import Webhook
from spendbrake.sqlite_alerts import SQLiteAlertBook, calls_after, open_reader
from spendbrake.sqlite_ledger import SQLiteLedger

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
HOOKS = (Webhook("https://hooks.slack.com/services/T0/B0/tok", "slack"), Webhook("http://x/y"))


def alert(threshold: str = "0.5", period: str = "2026-11-22") -> alerts.Alert:
    [found] = alerts.thresholds_reached("bot", "daily", period, 90, 100, (Decimal(threshold),), NOW)
    return found


def test_of_two_proxies_on_one_ledger_exactly_one_fires_an_alert(path: Path) -> None:
    first, second = SQLiteAlertBook(SQLiteLedger(path)), SQLiteAlertBook(SQLiteLedger(path))
    claimed = [first.claim(alert(), HOOKS), second.claim(alert(), HOOKS)]
    assert claimed[0] is not None
    assert claimed[1] is None
    assert second.claim(alert("0.8"), HOOKS) is not None  # another threshold is another alert
    assert first.claim(alert(period="2026-11-23"), HOOKS) is not None  # and another day
    [fired, *_] = first.alerts("bot")
    assert (fired.kind, fired.window, fired.threshold, fired.period) == (
        "threshold",
        "daily",
        "50%",
        "2026-11-22",
    )


def test_deliveries_start_pending_and_keep_only_the_webhooks_host(path: Path) -> None:
    book = SQLiteAlertBook(SQLiteLedger(path))
    alert_id = book.claim(alert(), HOOKS)
    assert alert_id is not None
    book.record_delivery(alert_id, 1, delivered=False, attempts=5, error="HTTP 500")
    assert [(d.target, d.format, d.state, d.attempts, d.last_error) for d in book.deliveries()] == [
        ("https://hooks.slack.com", "slack", "pending", 0, ""),
        ("http://x", "json", "failed", 5, "HTTP 500"),
    ]


def test_an_episode_seen_from_a_later_start_is_not_fired_again(path: Path) -> None:
    book = SQLiteAlertBook(SQLiteLedger(path))
    run_start = NOW - timedelta(hours=2)
    assert book.claim(alerts.busy("bot", run_start, NOW), ()) is not None
    # Another proxy, started later, saw the same run begin an hour later.
    later = alerts.busy("bot", run_start + timedelta(hours=1), NOW + timedelta(minutes=1))
    assert book.claim(later, (), unless_since=run_start + timedelta(hours=1)) is None


def test_the_heartbeat_reads_calls_after_the_last_it_saw(path: Path) -> None:
    ledger = SQLiteLedger(path)
    for minutes in (90, 30, 5):
        ledger.refuse(replace(intent("bot"), started_at=NOW - timedelta(minutes=minutes)), "x")
    reader = open_reader(path)
    seen, last = calls_after(reader, 0, NOW - timedelta(hours=1))
    assert seen == [("bot", NOW - timedelta(minutes=30)), ("bot", NOW - timedelta(minutes=5))]
    ledger.refuse(replace(intent("other"), started_at=NOW), "x")
    assert calls_after(reader, last, NOW - timedelta(hours=1))[0] == [("other", NOW)]
    assert calls_after(reader, last + 1, NOW)[0] == []
