"""Which windows besides the day limit a call, whatever ledger reads their totals."""

from ledger_hammer import DAY, intent
from spendbrake.ledger import DayTotals, Limits, WindowUse
from spendbrake.window_plan import first_without_room, plan_windows, run_time_limits, window_uses


def test_configured_windows_are_placed_where_their_totals_are() -> None:
    limits = Limits(monthly_nanos=100, session_tokens=50, group="team", group_daily_nanos=7)
    plan = plan_windows(intent(), limits, {})
    assert plan.limited == {"monthly": 100, "session_tokens": 50, "group_daily": 7}
    assert plan.keys() == {
        ("agent_month", "research-bot", DAY[:7]),
        ("session", "research-bot/s1", ""),
        ("group_day", "team", DAY),
    }


def test_run_time_limits_win_and_zero_turns_a_token_limit_off() -> None:
    limits = Limits(monthly_nanos=100, monthly_tokens=1_000)
    plan = plan_windows(intent(), limits, {"monthly": 40, "monthly_tokens": 0, "session_usd": 9})
    assert plan.limited == {"monthly": 40, "session_usd": 9}


def test_a_bucket_that_keeps_the_cheaper_model_never_limits() -> None:
    limits = Limits(monthly_tokens=1_000, keep_downgraded_when_empty=True)
    assert plan_windows(intent(), limits, {"monthly_tokens": 500}).limited == {
        "monthly_tokens": 1_000
    }


def test_group_windows_need_a_group() -> None:
    plan = plan_windows(intent(), Limits(group_daily_nanos=7), {"group_monthly": 9})
    assert plan.limited == {}


def test_uses_come_in_refusal_order_with_tokens_for_token_windows() -> None:
    limits = Limits(monthly_nanos=100, session_tokens=50)
    plan = plan_windows(intent(), limits, {})
    totals = {("session", "research-bot/s1", ""): (5, 6, 30, 4)}  # the month has no row yet
    assert window_uses(intent(), plan, totals) == [
        WindowUse("monthly", "research-bot", 0, 0, 100),
        WindowUse("session_tokens", "s1", 30, 4, 50),
    ]


def test_run_time_rows_are_the_agents_and_its_groups_group_windows() -> None:
    rows = [
        ("research-bot", "monthly", 1),
        ("team", "group_daily", 2),
        ("team", "monthly", 3),  # the group's name as an agent: not this agent's
        ("research-bot", "group_daily", 4),  # a group window set on the agent: not its group's
    ]
    assert run_time_limits(rows, "research-bot", "team") == {"monthly": 1, "group_daily": 2}


def test_the_first_window_without_room_is_the_days_then_the_others_in_order() -> None:
    totals = DayTotals("research-bot", DAY, 60, 30, limit_nanos=100, calls=2, blocked=0)
    month = WindowUse("monthly", "research-bot", 0, 0, 5)
    tokens = WindowUse("session_tokens", "s1", 40, 0, 50)
    assert first_without_room(totals, [month, tokens], 10, 10) == month
    assert first_without_room(totals, [tokens], 10, 10) is None  # exactly full still fits
    assert first_without_room(totals, [tokens], 10, 11) == tokens  # tokens, not nanos
    day = first_without_room(totals, [month], 11, 0)
    assert day is not None
    assert (day.window, day.remaining) == ("daily", 10)
