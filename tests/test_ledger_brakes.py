"""The brakes as the SQLite ledger applies them: inside the hold's transaction, from the calls
every process recorded, with suspensions and events written in the same transaction."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ledger_hammer import AnyLedger, intent, open_at, query
from spendbrake.brakes import Brakes
from spendbrake.ledger import (
    CallIntent,
    HoldBraked,
    HoldGranted,
    HoldRefused,
    Limits,
    Settlement,
    TokenCounts,
)
from spendbrake.ledger_url import LedgerLocation

BOTH_BACKENDS = True  # each test runs on SQLite and on PostgreSQL (conftest)
BIG = 10**12
T0 = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
LOOP = Brakes(loop_repeats=3, loop_window_s=60, backoff_steps_s=())


def call(at: datetime = T0, fingerprint: str = "same", tokens: int = 10) -> CallIntent:
    return replace(intent(), started_at=at, fingerprint=fingerprint, estimated_input_tokens=tokens)


def hold(
    ledger: AnyLedger, brakes: Brakes, at: datetime = T0, fingerprint: str = "same"
) -> HoldGranted | HoldRefused | HoldBraked:
    return ledger.hold(call(at, fingerprint), 1, BIG, Limits(), brakes)


def braked(result: HoldGranted | HoldRefused | HoldBraked) -> str:
    assert isinstance(result, HoldBraked), f"expected a brake, got {result}"
    return result.brake.code


def test_a_loop_suspends_the_agent_until_a_person_resumes_it(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    start = datetime.now(UTC) - timedelta(seconds=30)
    for second in (0, 10):
        assert isinstance(hold(ledger, LOOP, start + timedelta(seconds=second)), HoldGranted)
    assert braked(hold(ledger, LOOP, start + timedelta(seconds=20))) == "loop_detected"
    # Suspended: even a different request is refused now, and says why.
    different = hold(ledger, LOOP, start + timedelta(seconds=21), fingerprint="other")
    assert braked(different) == "agent_suspended"
    assert isinstance(different, HoldBraked)
    assert "the same request 3 times within 60 s" in different.brake.detail
    assert ledger.suspended_agents() == {"research-bot": "loop_detected"}
    [event] = ledger.events("research-bot")
    assert (event.kind, event.actor) == ("suspended", "spendbrake")
    reasons = query(path, "SELECT state, reason FROM calls ORDER BY id")
    assert reasons[2:] == [("refused", "loop_detected"), ("refused", "agent_suspended")]

    assert ledger.resume("research-bot", actor="alice") is True
    assert ledger.suspended_agents() == {}
    assert [(e.kind, e.actor) for e in ledger.events("research-bot")] == [
        ("resumed", "alice"),
        ("suspended", "spendbrake"),
    ]
    # The loop's history starts over: the same request passes again right after, although
    # its earlier copies are still inside the window.
    assert isinstance(hold(ledger, LOOP, datetime.now(UTC)), HoldGranted)
    assert ledger.resume("research-bot", actor="alice") is False  # nothing to lift


def test_identical_requests_spread_wider_than_the_window_are_no_loop(
    ledger: AnyLedger,
) -> None:
    for minute in range(5):
        assert isinstance(hold(ledger, LOOP, T0 + timedelta(minutes=minute)), HoldGranted)


def failed(ledger: AnyLedger, at: datetime) -> None:
    granted = ledger.hold(call(at, fingerprint=at.isoformat()), 1, BIG)
    assert isinstance(granted, HoldGranted)
    ledger.settle(granted.call_id, Settlement(0, TokenCounts(), "upstream_error"), BIG)


def test_upstream_failures_back_off_then_suspend_and_a_success_resets(
    ledger: AnyLedger,
) -> None:
    backoff = Brakes(loop_repeats=None, backoff_steps_s=(1, 5))
    failed(ledger, T0)
    # Settled just now: the wait counts from the failure, by the wall clock.
    result = hold(ledger, backoff, datetime.now(UTC), fingerprint="a")
    assert braked(result) == "backoff"
    assert isinstance(result, HoldBraked)
    assert result.brake.retry_after_s == 1
    ok = hold(ledger, backoff, datetime.now(UTC) + timedelta(seconds=2), fingerprint="b")
    assert isinstance(ok, HoldGranted)
    ledger.settle(ok.call_id, Settlement(1, TokenCounts(), "ok"), BIG)  # the run ends
    for _ in range(3):
        failed(ledger, T0)
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert braked(hold(ledger, backoff, later, fingerprint="c")) == "agent_suspended"
    assert ledger.suspended_agents() == {"research-bot": "agent_suspended"}


def test_spendbrakes_own_refusals_never_count_as_failures(ledger: AnyLedger) -> None:
    backoff = Brakes(loop_repeats=None, backoff_steps_s=(1,))
    for _ in range(5):
        assert isinstance(ledger.hold(call(), BIG + 1, BIG), HoldRefused)  # over budget
    assert isinstance(hold(ledger, backoff, fingerprint="fresh"), HoldGranted)


def test_calls_per_minute_hold_across_processes(path: LedgerLocation) -> None:
    open_at(path).close()
    limit = Brakes(loop_repeats=None, calls_per_minute=7)
    now = datetime.now(UTC)

    def one(i: int) -> bool:
        own = open_at(path)  # a connection per caller, as proxies on one file have
        try:
            result = own.hold(call(now, fingerprint=str(i)), 1, BIG, Limits(), limit)
            return isinstance(result, HoldGranted)
        finally:
            own.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = list(pool.map(one, range(20)))
    assert outcomes.count(True) == 7
    reasons = query(path, "SELECT reason, COUNT(*) FROM calls GROUP BY reason ORDER BY reason")
    assert reasons == [("", 7), ("rate_limited", 13)]


def test_the_rate_window_slides(ledger: AnyLedger) -> None:
    limit = Brakes(loop_repeats=None, calls_per_minute=2)
    assert isinstance(hold(ledger, limit, T0, "a"), HoldGranted)
    assert isinstance(hold(ledger, limit, T0 + timedelta(seconds=30), "b"), HoldGranted)
    refused = hold(ledger, limit, T0 + timedelta(seconds=45), "c")
    assert braked(refused) == "rate_limited"
    assert isinstance(refused, HoldBraked)
    assert refused.brake.retry_after_s == 15  # when the call of T0 leaves the window
    assert isinstance(hold(ledger, limit, T0 + timedelta(seconds=61), "d"), HoldGranted)


def test_calls_in_flight_are_capped(ledger: AnyLedger) -> None:
    cap = Brakes(loop_repeats=None, max_concurrent=2)
    first = hold(ledger, cap, T0, "a")
    assert isinstance(first, HoldGranted)
    assert isinstance(hold(ledger, cap, T0, "b"), HoldGranted)
    assert braked(hold(ledger, cap, T0, "c")) == "rate_limited"
    ledger.settle(first.call_id, Settlement(1, TokenCounts(), "ok"), BIG)
    assert isinstance(hold(ledger, cap, T0, "d"), HoldGranted)


def test_a_burn_rate_above_the_brake_suspends(ledger: AnyLedger) -> None:
    burn = Brakes(loop_repeats=None, burn_nanos_per_min=2_500)
    now = datetime.now(UTC)
    for i in range(3):
        result = ledger.hold(call(now, str(i)), 1_000, BIG, Limits(), burn)
        assert isinstance(result, HoldGranted)  # holds alone are no burn
        ledger.settle(result.call_id, Settlement(1_000, TokenCounts(), "ok"), BIG)
    result = ledger.hold(call(now, "x"), 1_000, BIG, Limits(), burn)  # $3,000 spent > $2,500
    assert braked(result) == "agent_suspended"
    assert ledger.suspended_agents() == {"research-bot": "agent_suspended"}


def test_brakes_set_at_run_time_bind_the_next_hold(ledger: AnyLedger) -> None:
    configured = Brakes(loop_repeats=3, calls_per_minute=None)
    ledger.set_limit("calls_per_minute", "research-bot", 1)
    ledger.set_limit("loop_repeats", "research-bot", 0)  # off, though the config has it on
    assert isinstance(hold(ledger, configured, T0, "same"), HoldGranted)
    assert braked(hold(ledger, configured, T0, "same")) == "rate_limited"
    ledger.set_limit("calls_per_minute", "research-bot", 0)  # off again
    for _ in range(5):
        assert isinstance(hold(ledger, configured, T0, "same"), HoldGranted)


def test_a_reset_day_forgives_its_spend_and_keeps_the_calls(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    day = intent().day
    first = ledger.hold(intent(), 600, 1_000)
    assert isinstance(first, HoldGranted)
    ledger.settle(first.call_id, Settlement(600, TokenCounts(), "ok"), 1_000)
    assert isinstance(ledger.hold(intent(), 500, 1_000), HoldRefused)
    assert ledger.day_totals("research-bot", day, 1_000).budget_blocked == 1

    assert ledger.reset_window("research-bot", "day", day, actor="alice") == 600
    totals = ledger.day_totals("research-bot", day, 1_000)
    assert (totals.spent_nanos, totals.budget_blocked) == (0, 0)
    assert isinstance(ledger.hold(intent(), 1_000, 1_000), HoldGranted)  # the whole day again
    assert query(path, "SELECT SUM(actual_nanos) FROM calls") == [(600,)]  # history unchanged
    [event] = ledger.events("research-bot")
    assert (event.kind, event.actor) == ("reset", "alice")
    assert f"day {day}: forgave $0.0000006 and 0 tokens" in event.detail
    assert ledger.reset_window("research-bot", "day", day, actor="alice") == 0  # nothing left


def test_a_reset_month_or_session_forgives_money_and_tokens(ledger: AnyLedger) -> None:
    limits = Limits(monthly_nanos=1_000, session_nanos=1_000, session_tokens=100)
    spent = ledger.hold(replace(intent(), estimated_input_tokens=90), 900, BIG, limits)
    assert isinstance(spent, HoldGranted)
    ledger.settle(spent.call_id, Settlement(900, TokenCounts(input_tokens=95), "ok"), BIG)
    assert ledger.month_tokens("research-bot", intent().day[:7]) == 95
    assert isinstance(ledger.hold(intent(), 200, BIG, limits), HoldRefused)
    ledger.reset_window("research-bot", "month", intent().day[:7], actor="bob")
    assert ledger.month_tokens("research-bot", intent().day[:7]) == 0
    blocked = ledger.hold(intent(), 200, BIG, limits)
    assert isinstance(blocked, HoldRefused)
    assert blocked.window == "session_usd"  # the month is clear; the session still is not
    ledger.reset_window("research-bot", "session", "", actor="bob", session="s1")
    assert isinstance(ledger.hold(replace(intent(), estimated_input_tokens=99), 999, BIG, limits),
                      HoldGranted)  # fmt: skip


def test_in_throttle_mode_a_rate_brake_records_nothing_so_the_call_can_wait(
    ledger: AnyLedger, path: LedgerLocation
) -> None:
    throttled = Brakes(loop_repeats=None, calls_per_minute=1, throttle=True)
    assert isinstance(hold(ledger, throttled, T0, "a"), HoldGranted)
    waiting = hold(ledger, throttled, T0 + timedelta(seconds=10), "b")
    assert isinstance(waiting, HoldBraked)
    assert (waiting.call_id, waiting.brake.retry_after_s) == (None, 50)
    assert query(path, "SELECT COUNT(*) FROM calls") == [(1,)]  # not refused: it waits
    # A brake that suspends is never waited out.
    suspended = hold(ledger, replace(throttled, loop_repeats=2), T0 + timedelta(seconds=30), "a")
    assert braked(suspended) == "loop_detected"
    assert isinstance(suspended, HoldBraked)
    assert suspended.call_id is not None


def test_retries_of_a_refused_call_are_no_loop(ledger: AnyLedger) -> None:
    rate_and_loop = Brakes(loop_repeats=3, calls_per_minute=1, backoff_steps_s=())
    assert isinstance(hold(ledger, rate_and_loop, T0, "same"), HoldGranted)
    for second in range(1, 8):  # an SDK retrying through 429s, the same request each time
        later = T0 + timedelta(seconds=second)
        assert braked(hold(ledger, rate_and_loop, later, "same")) == "rate_limited"
    assert ledger.suspended_agents() == {}


def test_a_hold_settled_at_its_amount_keeps_its_tokens_in_the_windows(
    ledger: AnyLedger,
) -> None:
    cap = Limits(session_tokens=1_000)
    first = ledger.hold(replace(intent(), estimated_input_tokens=900), 1, BIG, cap)
    assert isinstance(first, HoldGranted)
    ledger.settle_own_holds("proxy_stopped")  # no usage ever came: settled at the hold
    again = ledger.hold(replace(intent(), estimated_input_tokens=900), 1, BIG, cap)
    assert isinstance(again, HoldRefused)
    assert again.window == "session_tokens"


@pytest.mark.parametrize("outcome", ["interrupted", "cut_short", "client_disconnected"])
def test_only_the_providers_failures_count_toward_backoff(ledger: AnyLedger, outcome: str) -> None:
    backoff = Brakes(loop_repeats=None, backoff_steps_s=(60,))
    for i in range(3):
        held = ledger.hold(call(T0, str(i)), 1, BIG)
        assert isinstance(held, HoldGranted)
        ledger.settle(held.call_id, Settlement(0, TokenCounts(), outcome), BIG)
    assert isinstance(hold(ledger, backoff, datetime.now(UTC), "next"), HoldGranted)


def test_the_rate_window_reaches_across_a_local_midnight(ledger: AnyLedger) -> None:
    per_minute = Brakes(loop_repeats=None, calls_per_minute=1)
    before = replace(call(T0, "a"), day="2026-03-14", started_at=T0 - timedelta(seconds=20))
    assert isinstance(ledger.hold(before, 1, BIG, Limits(), per_minute), HoldGranted)
    after = replace(call(T0, "b"), day="2026-03-15")  # the next local day, 20 s later
    assert braked(ledger.hold(after, 1, BIG, Limits(), per_minute)) == "rate_limited"
