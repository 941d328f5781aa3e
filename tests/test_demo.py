"""What ``spendbrake demo runaway`` prints, from a run's summary."""

from rich.console import Console, RenderableType

from spendbrake.demo import burn_line, demo_summary, per_hour_nanos
from spendbrake.run import RunSummary

STOPPED = RunSummary(
    agent="runaway-agent",
    session="run-1",
    seconds=2.5,
    calls=12,
    spent_nanos=48_360_000,
    refused={"daily_budget_exceeded": 1},
    refused_nanos=4_035_000,
    stopped_by="daily_budget_exceeded",
    seconds_to_wall=2.4,
)


def printed(renderable: RenderableType) -> str:
    console = Console(record=True, width=200, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable, soft_wrap=True)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def test_an_hour_without_the_governor_is_extrapolated_from_the_rate_until_the_wall() -> None:
    assert per_hour_nanos(STOPPED) == 72_540_000_000  # $0.04836 in 2.4 s
    assert per_hour_nanos(RunSummary(agent="a", session="s", seconds=3)) is None


def test_the_end_says_when_it_hit_the_wall_what_was_spent_refused_and_saved() -> None:
    report = {"calls": 12, "status": 402, "error": "spendbrake: daily budget exceeded ..."}
    assert printed(demo_summary(STOPPED, 50_000_000, report)) == (
        "spendbrake stopped the runaway agent 2.40 s in (daily_budget_exceeded)\n"
        "  spent       $0.04836 in 12 calls (limit $0.05)\n"
        "  refused     1 call, worth up to $0.004035\n"
        "  no governor $72.54 an hour at the observed rate ($1.21 a minute)\n"
        "  agent saw   402: spendbrake: daily budget exceeded ..."
    )


def test_an_agent_that_stopped_on_its_own_is_not_claimed_as_stopped() -> None:
    ended = RunSummary(agent="runaway-agent", session="run-1", seconds=1.0, calls=2)
    text = printed(demo_summary(ended, 50_000_000, {"status": None, "error": "Connection error."}))
    assert text.splitlines()[0] == "the agent stopped before spendbrake had to stop it"
    assert "no governor" not in text


def test_the_burn_line_shows_spend_against_the_limit_and_the_rate() -> None:
    assert printed(burn_line(STOPPED, 50_000_000)).endswith(
        "$0.04836 of $0.05 · 12 calls · $1.21/min · 2.4 s"
    )
