"""Refusals carry DESIGN.md's statuses and retry headers, and messages a user can act on."""

from datetime import UTC, datetime

from spendbrake.ledger import DayTotals
from spendbrake.refusals import Refusal, daily_budget_exceeded


def test_budget_refusals_tell_sdks_not_to_retry_before_the_reset() -> None:
    refusal = Refusal("daily_budget_exceeded", "no", retry_after_s=3600)
    assert refusal.status == 402
    assert refusal.headers() == {
        "content-type": "application/json",
        "x-spendbrake-reason": "daily_budget_exceeded",
        "x-should-retry": "false",
        "retry-after": "3600",
    }


def test_rate_limits_ask_for_a_wait_of_at_most_a_minute() -> None:
    headers = Refusal("rate_limited", "slow down", retry_after_s=600).headers()
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("60", "60000")
    assert "x-should-retry" not in headers


def test_ledger_faults_are_503_and_may_be_retried() -> None:
    refusal = Refusal("ledger_unavailable", "locked")
    assert refusal.status == 503
    assert "x-should-retry" not in refusal.headers()


def test_the_daily_message_names_agent_amounts_reset_and_the_fix() -> None:
    totals = DayTotals("research-bot", "2026-11-22", 45_500_000, 0, 50_000_000, 7, 0)
    now = datetime(2026, 11, 22, 14, 24, 30, tzinfo=UTC)
    refusal = daily_budget_exceeded(totals, 12_300_000, datetime(2026, 11, 23, tzinfo=UTC), now)
    assert refusal.message == (
        "spendbrake: daily budget exceeded for agent 'research-bot': spent $0.0455 of $0.05 "
        "today, and this call may cost up to $0.0123. The limit resets at 2026-11-23 00:00 UTC "
        "(in 9h 35m). To raise it: spendbrake limit set research-bot --daily 0.10"
    )
    assert refusal.retry_after_s == 34_530


def test_the_daily_message_mentions_money_held_by_calls_in_flight() -> None:
    totals = DayTotals("bot", "2026-11-22", 10_000_000, 30_000_000, 50_000_000, 2, 0)
    now = datetime(2026, 11, 22, 23, 59, 30, tzinfo=UTC)
    message = daily_budget_exceeded(
        totals, 20_000_000, datetime(2026, 11, 23, tzinfo=UTC), now
    ).message
    assert "(another $0.03 is held by calls in flight)" in message
    assert "(in 1 min)" in message
