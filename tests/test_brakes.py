"""The brakes besides money, decided from what the ledger saw of an agent (a fake clock: no
sleeping). Each rule alone, then how they stack."""

from datetime import UTC, datetime, timedelta

import pytest

from spendbrake.brakes import NO_BRAKES, Activity, Brake, Brakes, Suspension, check

NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
DEFAULTS = Brakes()  # loop 8 in 60 s, backoff [1, 5], the rest off


def verdict(
    activity: Activity, brakes: Brakes = DEFAULTS, tokens: int = 100, nanos: int = 1
) -> Brake | None:
    return check(activity, brakes, tokens=tokens, nanos=nanos, now=NOW)


def test_a_quiet_agent_passes_every_brake() -> None:
    everything = Brakes(calls_per_minute=10, tokens_per_minute=1000, max_concurrent=2,
                        burn_nanos_per_min=1_000)  # fmt: skip
    assert verdict(Activity(), everything) is None


def test_a_suspended_agent_is_refused_whatever_else_is_true() -> None:
    suspension = Suspension("loop_detected", "the same request 8 times", NOW - timedelta(hours=1))
    brake = verdict(Activity(suspension=suspension), NO_BRAKES)
    assert brake is not None
    assert (brake.code, brake.retry_after_s, brake.suspends) == ("agent_suspended", None, False)
    assert "the same request 8 times" in brake.detail


def test_the_eighth_identical_request_trips_the_loop_brake_and_suspends() -> None:
    assert verdict(Activity(same_request_recently=6)) is None  # this is the 7th
    brake = verdict(Activity(same_request_recently=7))
    assert brake is not None
    assert (brake.code, brake.suspends) == ("loop_detected", True)
    assert "the same request 8 times within 60 s" in brake.detail


def test_loop_detection_can_be_turned_off() -> None:
    assert verdict(Activity(same_request_recently=100), Brakes(loop_repeats=None)) is None


@pytest.mark.parametrize(
    ("failures", "ago_s", "code", "retry_after"),
    [
        (1, 0.2, "backoff", 1),  # 1 s after the first failure
        (1, 1.0, None, None),
        (2, 1.5, "backoff", 4),  # 5 s after the second, 3.5 s left: rounded up
        (2, 5.0, None, None),
        (3, 300.0, "agent_suspended", None),  # the third: a person must look
    ],
)
def test_upstream_failures_back_off_then_suspend(
    failures: int, ago_s: float, code: str | None, retry_after: int | None
) -> None:
    seen = Activity(consecutive_failures=failures, last_failure_at=NOW - timedelta(seconds=ago_s))
    brake = verdict(seen)
    assert (brake.code if brake else None) == code
    assert (brake.retry_after_s if brake else None) == retry_after
    assert (brake.suspends if brake else False) == (code == "agent_suspended")


def test_configured_backoff_steps_decide_when_it_suspends() -> None:
    seen = Activity(consecutive_failures=3, last_failure_at=NOW - timedelta(seconds=1))
    brake = verdict(seen, Brakes(backoff_steps_s=(1, 2, 10)))
    assert brake is not None
    assert (brake.code, brake.retry_after_s) == ("backoff", 9)
    assert verdict(Activity(consecutive_failures=9), Brakes(backoff_steps_s=())) is None


def test_calls_per_minute_wait_until_the_oldest_call_leaves_the_window() -> None:
    brakes = Brakes(calls_per_minute=3)
    oldest = NOW - timedelta(seconds=42.5)
    assert verdict(Activity(calls_last_minute=2, oldest_call_last_minute=oldest), brakes) is None
    brake = verdict(Activity(calls_last_minute=3, oldest_call_last_minute=oldest), brakes)
    assert brake is not None
    assert (brake.code, brake.retry_after_s) == ("rate_limited", 18)
    assert "3 calls in the last minute, the limit is 3" in brake.detail


def test_tokens_per_minute_count_this_calls_estimate() -> None:
    brakes = Brakes(tokens_per_minute=1_000)
    seen = Activity(tokens_last_minute=900, calls_last_minute=1, oldest_call_last_minute=NOW)
    assert verdict(seen, brakes, tokens=100) is None
    brake = verdict(seen, brakes, tokens=101)
    assert brake is not None
    assert (brake.code, brake.retry_after_s) == ("rate_limited", 60)


def test_a_call_larger_than_a_minutes_tokens_is_refused_without_a_wait() -> None:
    brake = verdict(Activity(), Brakes(tokens_per_minute=1_000), tokens=5_000)
    assert brake is not None
    assert (brake.code, brake.retry_after_s) == ("rate_limited", None)  # waiting cannot help


def test_concurrency_is_capped_and_the_wait_is_short() -> None:
    brakes = Brakes(max_concurrent=2)
    assert verdict(Activity(in_flight=1), brakes) is None
    brake = verdict(Activity(in_flight=2), brakes)
    assert brake is not None
    assert (brake.code, brake.retry_after_s) == ("rate_limited", 1)


def test_a_burn_rate_above_the_brake_suspends_and_one_big_hold_is_no_burn() -> None:
    brakes = Brakes(burn_nanos_per_min=1_000_000_000)  # $1.00 a minute
    assert verdict(Activity(spent_last_minute=1_000_000_000), brakes) is None
    # A single call's worst case is not a rate: only what was spent counts.
    assert verdict(Activity(), brakes, nanos=2_000_000_000) is None
    brake = verdict(Activity(spent_last_minute=1_000_000_001), brakes)
    assert brake is not None
    assert (brake.code, brake.suspends) == ("agent_suspended", True)
    assert "$1.000000001 spent in the last minute, above the brake's $1.00 a minute" in (
        brake.detail
    )


def test_brakes_that_suspend_come_before_brakes_that_ask_to_wait() -> None:
    seen = Activity(same_request_recently=9, calls_last_minute=99, oldest_call_last_minute=NOW)
    brake = verdict(seen, Brakes(calls_per_minute=5))
    assert brake is not None
    assert brake.code == "loop_detected"
    failing = Activity(consecutive_failures=3, in_flight=9)
    brake = verdict(failing, Brakes(max_concurrent=1))
    assert brake is not None
    assert brake.code == "agent_suspended"
