"""The status page as HTML: the facts of ``top``, the day's chart, the recent refusals, and a
page per agent. One self-contained document each: inline CSS and SVG, no script, no external
asset, a meta refresh every few seconds.

Every value that comes from the ledger or a client (agent names, models, reasons) is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from urllib.parse import quote
from zoneinfo import ZoneInfo

from spendbrake.burn import format_rate
from spendbrake.money import format_usd
from spendbrake.status_facts import AgentDetail, Overview
from spendbrake.status_reads import TOKEN_KINDS, CallRow
from spendbrake.svg_chart import spend_chart
from spendbrake.top import AgentLine

REFRESH_S = 5
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.4em; margin: 0; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
.as-of { color: #555; margin: .2em 0 1em; }
table { border-collapse: collapse; } th, td { padding: .25em .7em; text-align: left; }
th { border-bottom: 1px solid #999; font-weight: 600; }
tr:nth-child(even) td { background: #f4f4f4; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.state-ok { color: #087f23; } .state-throttled, .state-downgraded { color: #9a6700; }
.state-exhausted, .state-suspended { color: #c62828; font-weight: 600; }
.bar { display: inline-block; width: 5em; height: .7em; background: #e4e4e4; margin-right: .4em; }
.bar span { display: block; height: 100%; background: #2e7d32; } .bar .hot { background: #c62828; }
.red { color: #c62828; font-weight: 600; } .none { color: #666; }
footer { margin-top: 2em; color: #555; font-size: .9em; }
form.login { margin-top: 1em; } input { font: inherit; padding: .3em; }
"""


def _page(title: str, body: Iterable[str], *, refresh: bool = True) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"{meta}<title>{escape(title)}</title><style>{_STYLE}</style></head>",
            "<body>",
            *body,
            "</body></html>",
        ]
    )


def _as_of(now: datetime, tz: ZoneInfo) -> str:
    return (
        f'<p class="as-of">as of {now.astimezone(tz):%Y-%m-%d %H:%M:%S} ({escape(tz.key)}); '
        f"this page refreshes every {REFRESH_S} s</p>"
    )


def agent_href(agent: str) -> str:
    return f"/agents/{quote(agent, safe='')}"


def _against(spent: int, limit: int | None) -> str:
    """'$0.03 of $0.05 (60%)' with a bar, as ``top`` shows it; the amount alone without a limit."""
    if limit is None:
        return escape(format_usd(spent))
    used = spent * 100 // limit if limit > 0 else 100
    hot = ' class="hot"' if used >= 100 else ""
    bar = f'<span class="bar"><span{hot} style="width: {min(used, 100)}%"></span></span>'
    return f"{bar}{format_usd(spent)} of {format_usd(limit)} ({used}%)"


def _rate(line: AgentLine, nanos_per_minute: int) -> str:
    shown = escape(format_rate(nanos_per_minute).removesuffix("/min"))
    return f'<span class="red">{shown}</span>' if nanos_per_minute > line.red_above else shown


def _projection(line: AgentLine) -> str:
    # A suspended agent spends nothing until it is resumed: no limit comes nearer (as in top).
    ahead = line.projection if line.state != "suspended" else None
    return escape(ahead.describe()) if ahead else ""


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], css: str, numeric: int = 0) -> str:
    """A table of cells already escaped; the last ``numeric`` columns are right-aligned."""
    first = len(head) - numeric
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = [
        "<tr>"
        + "".join(f"<td{' class=n' if i >= first else ''}>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    ]
    rows_html = "".join(body)
    return f'<table class="{css}"><thead><tr>{cells}</tr></thead><tbody>{rows_html}</tbody></table>'


def _agent_link(agent: str) -> str:
    return f'<a href="{escape(agent_href(agent))}">{escape(agent)}</a>'


def _agent_cells(line: AgentLine, link: bool) -> list[str]:
    return [
        _agent_link(line.agent) if link else escape(line.agent),
        f'<span class="state-{escape(line.state)}">{escape(line.state)}</span>',
        _against(line.spent_today, line.limit_today),
        _against(line.spent_month, line.limit_month),
        _rate(line, line.rate_1m),
        _rate(line, line.rate_15m),
        _projection(line),
        f"{line.calls:,}",
        f"{line.blocked:,}",
        escape(line.last_refusal or ""),
    ]


_AGENT_HEAD = ("agent", "state", "today", "this month", "$/min 1m", "$/min 15m",
               "limit reached in", "calls", "blocked", "last refusal")  # fmt: skip


def _refusal_rows(calls: Iterable[CallRow], tz: ZoneInfo) -> list[list[str]]:
    return [
        [
            f"{call.started_at.astimezone(tz):%H:%M:%S}",
            _agent_link(call.values["agent"]),
            escape(call.values["requested_model"]),
            escape(call.values["reason"]),
            escape(format_usd(call.values["held_nanos"])),
        ]
        for call in calls
    ]


def _footer() -> str:
    links = ["/api/status", "/api/calls", "/api/events", "/metrics"]
    shown = " · ".join(f'<a href="{link}">{link}</a>' for link in links)
    return f'<footer>JSON and metrics: {shown} · <a href="/logout">log out</a></footer>'


def overview_page(overview: Overview) -> str:
    tz = overview.day.tz
    agents = (
        _table(_AGENT_HEAD, (_agent_cells(line, True) for line in overview.lines), "agents", 4)
        if overview.lines
        else _none("No agent has called yet today.")
    )
    chart = spend_chart(overview.series, overview.day.start, overview.day.end, overview.now, tz)
    head = ("time", "agent", "model asked", "reason", "would have held")
    rows = _refusal_rows(overview.refusals, tz)
    refusals = _table(head, rows, "refusals", 1) if rows else _none("No call was refused today.")
    return _page(
        "spendbrake status",
        [
            "<h1>spendbrake</h1>",
            _as_of(overview.now, tz),
            "<h2>Agents</h2>",
            agents,
            f"<h2>Spend today ({escape(overview.day.day)})</h2>",
            chart,
            "<h2>Recent refusals</h2>",
            refusals,
            _footer(),
        ],
    )


def _none(text: str) -> str:
    return f'<p class="none">{escape(text)}</p>'


def _models_table(detail: AgentDetail) -> str:
    head = ("provider", "model", "calls", *(f"{k} tokens" for k in TOKEN_KINDS), "spent", "held")
    rows = [
        [
            escape(m.provider),
            escape(m.model),
            f"{m.calls:,}",
            *(f"{m.tokens[kind]:,}" for kind in TOKEN_KINDS),
            escape(format_usd(m.spent_nanos)),
            escape(format_usd(m.held_nanos)),
        ]
        for m in detail.models
    ]
    return _table(head, rows, "models", len(head) - 2) if rows else _none("No call forwarded.")


def _calls_table(detail: AgentDetail) -> str:
    head = ("time", "session", "model", "state", "outcome", "input", "output", "cost (or hold)")
    rows = []
    for call in detail.calls:
        row = call.values
        cost = row["actual_nanos"] if row["actual_nanos"] is not None else row["held_nanos"]
        rows.append(
            [
                f"{call.started_at.astimezone(detail.day.tz):%H:%M:%S}",
                escape(row["session"]),
                escape(row["forwarded_model"]),
                escape(row["state"]),
                escape(row["reason"] or row["outcome"] or ""),
                f"{row['input_tokens']:,}",
                f"{row['output_tokens']:,}",
                escape(format_usd(cost)),
            ]
        )
    return _table(head, rows, "calls", 3) if rows else _none("No call today.")


def _events_table(detail: AgentDetail) -> str:
    rows = [
        [
            f"{e.at.astimezone(detail.day.tz):%Y-%m-%d %H:%M:%S}",
            escape(e.kind),
            escape(e.detail),
            escape(e.actor),
        ]
        for e in detail.events
    ]
    return _table(("when", "what", "detail", "by"), rows, "events") if rows else _none("None.")


def agent_page(detail: AgentDetail) -> str:
    tz, agent = detail.day.tz, detail.agent
    body = [f"<h1>spendbrake: {escape(agent)}</h1>", _as_of(detail.now, tz)]
    body.append('<p><a href="/">all agents</a></p>')
    if detail.line is None:
        body.append(_none("No such agent: not in the configuration, and no call today."))
        return _page(f"spendbrake: {agent}", [*body, _footer()])
    chart = spend_chart(
        {agent: detail.series},
        detail.day.start,
        detail.day.end,
        detail.now,
        tz,
        title=f"Spend today: {agent}",
    )
    refusals = [[escape(r.reason), escape(r.model), f"{r.count:,}"] for r in detail.refusals]
    body += [
        _table(_AGENT_HEAD, [_agent_cells(detail.line, False)], "agents", 4),
        f"<h2>Spend today ({escape(detail.day.day)})</h2>",
        chart,
        "<h2>By model today</h2>",
        _models_table(detail),
        "<h2>Refusals today</h2>",
        _table(("reason", "model asked", "calls"), refusals, "refusals", 1)
        if refusals
        else _none("None."),
        "<h2>Latest calls</h2>",
        _calls_table(detail),
        "<h2>Events</h2>",
        _events_table(detail),
    ]
    return _page(f"spendbrake: {agent}", [*body, _footer()])


def login_page(next_path: str, message: str) -> str:
    """The admin token, asked for once: it is kept in an HttpOnly cookie afterwards."""
    return _page(
        "spendbrake: admin token",
        [
            "<h1>spendbrake</h1>",
            f"<p>{escape(message)}</p>",
            '<form class="login" method="post" action="/login">',
            f'<input type="hidden" name="next" value="{escape(next_path)}">',
            '<label>Admin token <input type="password" name="token" autocomplete="off" '
            'autofocus></label> <button type="submit">Open</button>',
            "</form>",
            "<p>Make one with <code>spendbrake admin-token</code>.</p>",
        ],
        refresh=False,
    )
