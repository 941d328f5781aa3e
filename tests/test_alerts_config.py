"""The [alerts] section: thresholds, webhooks and the heartbeat, parsed with errors that name
the key and never echo a webhook's URL."""

from decimal import Decimal

import pytest

from spendbrake.alerts_config import AlertsConfig, Webhook
from spendbrake.config import ConfigError, parse_config


def alerts(**table: object) -> AlertsConfig:
    return parse_config({"alerts": table}).alerts


def test_without_a_section_thresholds_are_50_80_and_100_percent_and_nothing_else() -> None:
    config = parse_config({}).alerts
    assert config.thresholds_for("any") == (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
    assert (config.webhooks, config.burn_for("any"), config.heartbeat_on) == ((), None, False)


def test_a_full_section() -> None:
    config = alerts(
        thresholds=[1.0, 0.9],
        burn_usd_per_min=1.5,
        webhooks=[
            {"url": "https://hooks.slack.com/services/T0/B0/tok", "format": "slack"},
            {"url": "http://127.0.0.1:9000/hook"},
        ],
        heartbeat_silent_after_s=600,
        heartbeat_busy_for_s=3600,
        agents={"research-bot": {"thresholds": [0.25], "burn_usd_per_min": 0}},
    )
    assert config.thresholds_for("other") == (Decimal("0.9"), Decimal("1.0"))
    assert config.thresholds_for("research-bot") == (Decimal("0.25"),)
    assert config.burn_for("other") == 1_500_000_000
    assert config.burn_for("research-bot") is None  # 0 turns it off for the agent
    assert [(h.target, h.format) for h in config.webhooks] == [
        ("https://hooks.slack.com", "slack"),
        ("http://127.0.0.1:9000", "json"),
    ]
    assert config.heartbeat_on
    assert (config.heartbeat_gap_s, config.heartbeat_every_s) == (60, 30)


def test_a_webhooks_repr_keeps_its_token_out_of_logs_and_tracebacks() -> None:
    hook = Webhook("https://hooks.slack.com/services/T0/B0/secret-token", "slack")
    assert "secret-token" not in repr(hook)
    assert repr(hook) == "Webhook('https://hooks.slack.com', format='slack')"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"thresholds": [0.5, 1.2]}, "alerts.thresholds is a list of shares of a limit above 0"),
        ({"thresholds": "0.5"}, "alerts.thresholds is a list of shares"),
        ({"webhooks": [{"url": "ftp://x/secret"}]}, "alerts.webhooks[0].url must be an http://"),
        ({"webhooks": [{"url": "https://x/y", "format": "xml"}]}, '"json" or "slack"'),
        ({"webhooks": [{"url": "https://x/y", "token": "t"}]}, "unknown key alerts.webhooks[0]"),
        ({"heartbeat_silent_after_s": 0}, "alerts.heartbeat_silent_after_s must be a whole"),
        ({"retry_backoff_s": -1}, "alerts.retry_backoff_s is seconds above 0"),
        ({"burn_usd_per_min": "lots"}, "alerts.burn_usd_per_min must be a dollar amount"),
        ({"agents": {"bot": {"daily_usd": 1}}}, "unknown key alerts.agents.bot.daily_usd"),
        ({"thresholds": [0.5], "threshold": 1}, "unknown key alerts.threshold"),
    ],
)
def test_bad_values_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        alerts(**table)
    assert message in str(raised.value)
    assert "secret" not in str(raised.value)  # a bad URL is not echoed
