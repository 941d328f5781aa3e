"""Windows besides the agent's day: its month, its group's day and month, its session's dollars
and tokens. A call must fit every window that applies, and the refusal names the one that
blocked it. (The day itself: test_sqlite_ledger.py.)"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import sqlite_utils

import spendbrake.sqlite_ledger
from ledger_hammer import (
    AnyLedger,
    assert_totals_match_calls,
    assert_windows_match_calls,
    granted,
    intent,
    open_at,
    query,
    refused,
)
from spendbrake.ledger import (
    CallIntent,
    HoldGranted,
    Limits,
    Settlement,
    TokenCounts,
)
from spendbrake.ledger_url import LedgerLocation

BOTH_BACKENDS = True  # each test runs on SQLite and on PostgreSQL (conftest)
BIG_DAY = 1_000_000  # a day with room to spare, so other windows decide
NOV_30, DEC_1 = "2026-11-30", "2026-12-01"


def call(
    agent: str = "research-bot", day: str = NOV_30, session: str = "s1", tokens: int = 0
) -> CallIntent:
    return replace(intent(agent, day, session), estimated_input_tokens=tokens)


def settled(actual: int, tokens: int = 0) -> Settlement:
    return Settlement(actual, TokenCounts(input_tokens=tokens), "ok")


def reason_of(path: LedgerLocation, call_id: int) -> str:
    [(reason,)] = query(path, "SELECT reason FROM calls WHERE id = ?", (call_id,))
    return str(reason)


def test_a_call_that_fits_the_day_but_not_the_month_is_refused_by_the_month(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    month = Limits(monthly_nanos=500)
    granted(ledger.hold(call(day="2026-11-02"), 300, BIG_DAY, month))
    granted(ledger.hold(call(day=NOV_30), 200, BIG_DAY, month))  # exactly the month's limit
    result = refused(ledger.hold(call(day=NOV_30), 1, BIG_DAY, month))
    assert result.blocked_by is not None
    assert (result.window, result.blocked_by.spent + result.blocked_by.held) == ("monthly", 500)
    assert result.blocked_by.limit == 500
    assert reason_of(path, result.call_id) == "monthly_budget_exceeded"
    # A refusal by the month makes the agent's day count it as budget-blocked.
    assert assert_totals_match_calls(ledger, path, "research-bot", NOV_30, BIG_DAY).budget_blocked
    granted(ledger.hold(call(day=DEC_1), 500, BIG_DAY, month))  # a new month, a new window
    assert_windows_match_calls(path)


def test_the_day_is_named_first_when_several_windows_are_full(ledger: AnyLedger) -> None:
    limits = Limits(monthly_nanos=100, session_nanos=100)
    granted(ledger.hold(call(), 100, 100, limits))
    assert refused(ledger.hold(call(), 1, 100, limits)).window == "daily"


def test_agents_of_a_group_share_its_day_and_month(ledger: AnyLedger, path: LedgerLocation) -> None:
    research = Limits(group="research", group_daily_nanos=300, group_monthly_nanos=400)
    granted(ledger.hold(call("bot-a"), 200, BIG_DAY, research))
    granted(ledger.hold(call("bot-b"), 100, BIG_DAY, research))
    blocked = refused(ledger.hold(call("bot-b"), 1, BIG_DAY, research))
    assert blocked.blocked_by is not None
    assert (blocked.window, blocked.blocked_by.name) == ("group_daily", "research")
    assert reason_of(path, blocked.call_id) == "daily_budget_exceeded"
    granted(ledger.hold(call("bot-c"), 300, BIG_DAY))  # no group: the team's limit is not its own
    granted(ledger.hold(call("bot-a", day="2026-11-29"), 100, BIG_DAY, research))
    assert refused(ledger.hold(call("bot-a", day="2026-11-28"), 1, BIG_DAY, research)).window == (
        "group_monthly"
    )
    assert_windows_match_calls(path)


def test_a_sessions_dollars_are_its_own(ledger: AnyLedger, path: LedgerLocation) -> None:
    session = Limits(session_nanos=250)
    first = granted(ledger.hold(call(session="run-1"), 200, BIG_DAY, session))
    ledger.settle(first.call_id, settled(150), BIG_DAY)  # gives 50 back to the session
    granted(ledger.hold(call(session="run-1"), 100, BIG_DAY, session))
    blocked = refused(ledger.hold(call(session="run-1"), 1, BIG_DAY, session))
    assert blocked.blocked_by is not None
    assert (blocked.window, blocked.blocked_by.name) == ("session_usd", "run-1")
    assert reason_of(path, blocked.call_id) == "session_budget_exceeded"
    granted(ledger.hold(call(session="run-2"), 250, BIG_DAY, session))  # another session
    # The session spans days: it does not start over at midnight.
    assert refused(ledger.hold(call(session="run-1", day=DEC_1), 1, BIG_DAY, session)).window == (
        "session_usd"
    )
    assert_windows_match_calls(path)


def test_session_tokens_hold_the_estimate_then_count_what_was_used(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    cap = Limits(session_tokens=1_000)
    first = granted(ledger.hold(call(tokens=800), 1, BIG_DAY, cap))
    blocked = refused(ledger.hold(call(tokens=300), 1, BIG_DAY, cap))  # 800 held + 300 > 1000
    assert (blocked.window, blocked.requested_tokens) == ("session_tokens", 300)
    assert blocked.blocked_by is not None
    assert (blocked.blocked_by.held, blocked.blocked_by.limit) == (800, 1_000)
    assert reason_of(path, blocked.call_id) == "session_tokens_exceeded"
    ledger.settle(first.call_id, settled(1, tokens=600), BIG_DAY)
    granted(ledger.hold(call(tokens=400), 1, BIG_DAY, cap))  # 600 used + 400 fits exactly
    assert_windows_match_calls(path)


def test_run_time_limits_bind_at_once_and_win_over_the_config(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    ledger.set_limit("monthly", "research-bot", 100)  # no monthly limit in the config at all
    granted(ledger.hold(call(), 100, BIG_DAY))
    assert refused(ledger.hold(call(), 1, BIG_DAY)).window == "monthly"
    ledger.set_limit("monthly", "research-bot", 1_000)  # raised: wins over a configured 100
    granted(ledger.hold(call(), 1, BIG_DAY, Limits(monthly_nanos=100)))
    ledger.set_limit("group_daily", "research", 50)
    assert refused(ledger.hold(call("bot-z"), 51, BIG_DAY, Limits(group="research"))).window == (
        "group_daily"
    )
    ledger.set_limit("session_tokens", "research-bot", 10)
    assert refused(ledger.hold(call(tokens=11), 1, BIG_DAY)).window == "session_tokens"
    assert_windows_match_calls(path)


def test_setting_a_limit_of_an_unknown_window_or_below_zero_is_refused(
    ledger: AnyLedger,
) -> None:
    with pytest.raises(ValueError, match="no window 'weekly'"):
        ledger.set_limit("weekly", "research-bot", 1)
    with pytest.raises(ValueError, match="negative"):
        ledger.set_limit("monthly", "research-bot", -1)


def test_fifty_concurrent_calls_never_pass_a_session_token_cap(path: LedgerLocation) -> None:
    open_at(path).close()
    cap = Limits(session_tokens=10_000)

    def one_call(_: int) -> bool:
        own = open_at(path)  # a connection per caller, as proxies on one file have
        try:
            return isinstance(own.hold(call(tokens=1_000), 1, BIG_DAY, cap), HoldGranted)
        finally:
            own.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(one_call, range(50)))
    assert outcomes.count(True) == 10
    [(held_tokens,)] = query(path, "SELECT held_tokens FROM window_totals WHERE scope = 'session'")
    assert held_tokens == 10_000
    assert_windows_match_calls(path)


@pytest.mark.sqlite_only
def test_a_ledger_from_before_these_windows_counts_its_calls_in_them(path: LedgerLocation) -> None:
    db = sqlite_utils.Database(path)
    spendbrake.sqlite_ledger.migrations.apply(
        db, stop_before="m005_monthly_group_and_session_windows"
    )
    db.conn.close()
    with sqlite_utils.Database(path).conn as conn:
        for day, state, held, actual in ((NOV_30, "settled", 300, 250), (NOV_30, "held", 70, None)):
            conn.execute(
                """
                INSERT INTO calls (started_at, day, agent, session, provider, endpoint,
                    requested_model, forwarded_model, stream, held_nanos, actual_nanos, state,
                    owner)
                VALUES ('2026-11-30T00:00:00+00:00', ?, 'research-bot', 's1', 'openai',
                    '/v1/chat/completions', 'gpt-4o', 'gpt-4o', 0, ?, ?, ?, 'other-host:1:1')
                """,
                (day, held, actual, state),
            )
    ledger = open_at(path)
    assert_windows_match_calls(path)
    assert refused(ledger.hold(call(), 181, BIG_DAY, Limits(monthly_nanos=500))).window == (
        "monthly"
    )
    ledger.close()


def test_a_token_limit_set_to_zero_at_run_time_is_off(ledger: AnyLedger) -> None:
    ledger.set_limit("session_tokens", "research-bot", 0)
    ledger.set_limit("monthly_tokens", "research-bot", 0)
    capped = Limits(session_tokens=10, monthly_tokens=10)
    granted(ledger.hold(call(tokens=5_000), 1, BIG_DAY, capped))


def test_a_bucket_set_at_run_time_never_refuses_an_agent_that_keeps_the_cheaper_model(
    ledger: AnyLedger,
) -> None:
    ledger.set_limit("monthly_tokens", "research-bot", 10)
    keeps = Limits(keep_downgraded_when_empty=True)
    granted(ledger.hold(call(tokens=5_000), 1, BIG_DAY, keeps))
    assert refused(ledger.hold(call(tokens=5_000), 1, BIG_DAY)).window == "monthly_tokens"


def test_limits_set_together_are_written_all_or_none(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    with pytest.raises(ValueError, match="negative"):
        ledger.set_limits([("monthly", "research-bot", 5), ("session_usd", "research-bot", -1)])
    assert query(path, "SELECT * FROM limits") == []
    ledger.set_limits([("monthly", "research-bot", 5), ("session_usd", "research-bot", 7)])
    assert sorted(query(path, 'SELECT "window", limit_nanos FROM limits')) == [
        ("monthly", 5),
        ("session_usd", 7),
    ]
