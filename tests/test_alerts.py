"""What fires and how it reads: thresholds of a window, the heartbeat's episodes, payloads."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from spendbrake import alerts
from spendbrake.brakes import Brake
from spendbrake.heartbeat import Heartbeat

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SHARES = (Decimal("0.5"), Decimal("0.8"), Decimal("1"))


def reached(spent: int, limit: int, *, refused: bool = False) -> list[str]:
    found = alerts.thresholds_reached(
        "bot", "daily", "2026-11-22", spent, limit, SHARES, NOW, refused=refused
    )
    return [a.threshold for a in found]


def test_a_threshold_is_reached_at_exactly_its_share_of_the_limit() -> None:
    assert reached(49, 100) == []
    assert reached(50, 100) == ["50%"]
    assert reached(80, 100) == ["50%", "80%"]
    assert reached(100, 100) == ["50%", "80%", "100%"]
    assert reached(5, 0) == []  # a zero limit has no shares


def test_a_window_that_refused_a_call_has_reached_its_limit_whatever_was_spent() -> None:
    assert reached(30, 100, refused=True) == ["100%"]
    assert reached(90, 100, refused=True) == ["50%", "80%", "100%"]


def test_the_key_names_the_window_and_its_period() -> None:
    [alert] = alerts.thresholds_reached(
        "bot", "monthly", "2026-11", 60, 100, (Decimal("0.5"),), NOW
    )
    assert alert.key == ("bot", "threshold", "monthly", "2026-11", "50%")
    assert alert.message == (
        "bot has spent 50% of its monthly limit: $0.00000006 of $0.0000001 (2026-11)"
    )


def test_percent_labels() -> None:
    assert [alerts.percent(Decimal(s)) for s in ("0.5", "1", "1.0", "0.125")] == [
        "50%",
        "100%",
        "100%",
        "12.5%",
    ]


def test_a_suspension_by_a_loop_says_how_to_resume() -> None:
    brake = Brake("loop_detected", "the same request 8 times within 60 s", suspends=True)
    alert = alerts.suspended("bot", brake, NOW)
    assert (alert.kind, alert.period) == ("loop_detected", "2026-11-22T12:00:00+00:00")
    assert alert.message == (
        "bot was suspended for a loop: the same request 8 times within 60 s; resume it with: "
        "spendbrake resume bot"
    )


def test_json_and_slack_payloads() -> None:
    [alert] = alerts.thresholds_reached(
        "bot", "daily", "2026-11-22", 4_000_000_000, 5_000_000_000, (Decimal("0.8"),), NOW
    )
    assert json.loads(alerts.payload(alert, "json")) == {
        "source": "spendbrake",
        "alert": "threshold",
        "agent": "bot",
        "window": "daily",
        "period": "2026-11-22",
        "threshold": "80%",
        "message": "bot has spent 80% of its daily limit: $4.00 of $5.00 (2026-11-22)",
        "at": "2026-11-22T12:00:00+00:00",
        "spent_usd": "4.000000000",
        "limit_usd": "5.000000000",
    }
    assert json.loads(alerts.payload(alert, "slack")) == {
        "text": ":money_with_wings: spendbrake: bot has spent 80% of its daily limit: $4.00 of "
        "$5.00 (2026-11-22)"
    }


def heartbeat() -> Heartbeat:
    return Heartbeat(
        gap=timedelta(seconds=60),
        silent_after=timedelta(minutes=10),
        busy_for=timedelta(minutes=30),
    )


def test_an_agent_that_went_silent_is_due_once_per_silence() -> None:
    beat = heartbeat()
    beat.saw("bot", NOW)
    assert list(beat.due(NOW + timedelta(minutes=9))) == []
    [due] = beat.due(NOW + timedelta(minutes=10))
    assert (due.alert.kind, due.alert.agent, due.unless_since) == ("silent", "bot", NOW)
    assert due.alert.message.startswith("bot went silent: no call for 10 min")
    assert list(beat.due(NOW + timedelta(minutes=20))) == []  # the same silence
    beat.saw("bot", NOW + timedelta(minutes=30))
    [again] = beat.due(NOW + timedelta(minutes=41))
    assert again.alert.period != due.alert.period  # a new episode


def test_an_agent_calling_without_a_pause_is_busy_from_the_runs_first_call() -> None:
    beat = heartbeat()
    for i in range(36):  # a call every 50 s: 35 * 50 s = 29 min 10 s, then 30 min
        beat.saw("bot", NOW + timedelta(seconds=50 * i))
    assert list(beat.due(NOW + timedelta(seconds=50 * 35 + 5))) == []
    beat.saw("bot", NOW + timedelta(minutes=30))
    [due] = beat.due(NOW + timedelta(minutes=30, seconds=5))
    assert (due.alert.kind, due.unless_since) == ("busy", NOW)
    assert due.alert.period == NOW.isoformat(timespec="microseconds")


def test_a_pause_longer_than_the_gap_starts_a_new_run() -> None:
    beat = heartbeat()
    for minute in range(20):
        beat.saw("bot", NOW + timedelta(minutes=minute))
    beat.saw("bot", NOW + timedelta(minutes=21, seconds=30))  # 90 s after the last
    assert beat.runs["bot"].first == NOW + timedelta(minutes=21, seconds=30)
    assert list(beat.due(NOW + timedelta(minutes=22))) == []
