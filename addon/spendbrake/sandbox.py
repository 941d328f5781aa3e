"""The processes of ``spendbrake run``: an ephemeral proxy, the command, signals, temporary files.

The proxy runs in a session of its own, so a Ctrl-C at the terminal reaches the command and not
the proxy, which must outlive the command to meter its last calls; on Linux it also stops when
``spendbrake run`` dies, however it dies. Everything temporary (configuration, CA, ledger, the
proxy's log) lives in one directory, removed at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from rich.console import Console

from spendbrake import certs
from spendbrake.config import Config, ConfigError, load_config, parse_config
from spendbrake.ledger import LedgerUnavailable
from spendbrake.proxy import mitmdump_arguments, upstream_auth, upstream_mode
from spendbrake.run import (
    CallRow,
    RunOptions,
    RunSummary,
    caller_ca_files,
    child_environment,
    dropped_no_proxy,
    exit_code,
    new_session_id,
    own_option_conflicts,
    proxy_url,
    render_summary,
    run_config,
    summarize,
    toml_document,
    upstream_proxy_of,
)
from spendbrake.sqlite_ledger import SQLiteLedger
from spendbrake.windows import utc_now

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 3.0  # a response is settled just after its last byte reached the command
_LISTENING = re.compile(rb"listening at 127\.0\.0\.1:(\d+)\.")
_PR_SET_PDEATHSIG = 1
_RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


Popen = subprocess.Popen[bytes]


class RunError(Exception):
    """The run could not go ahead; the message says why. ``exit_code`` as a shell would."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class RunResult:
    returncode: int  # the command's, as Popen reports it (-N: ended by signal N)
    summary: RunSummary
    proxy_failure: str | None = None  # the proxy's output, when it died before the command ended


# -- the configuration ------------------------------------------------------------------------


def prepare_config(options: RunOptions) -> tuple[str, Config]:
    """The run's configuration file text, checked as the proxy will check it."""
    path = options.config_path
    user: dict[str, Any] = {}
    if path is not None:
        try:
            load_config(path)  # the user's own mistakes, named in the user's own file
            with path.open("rb") as f:
                user = tomllib.load(f)
        except (ConfigError, OSError) as e:
            raise RunError(str(e)) from None
    document = run_config(user, options)
    try:
        config = parse_config(document)
    except ConfigError as e:
        table = document["agents"][options.agent]
        flags = ", ".join(f"{k} = {v}" for k, v in table.items())
        raise RunError(
            f"the proxy cannot take the run's configuration ({path or 'no --config'}, with "
            f"[agents.{options.agent}] {flags}): {e}"
        ) from None
    return toml_document(document), config


# -- signals ----------------------------------------------------------------------------------


def _in_terminal_foreground() -> bool:
    """A Ctrl-C at a terminal reaches its whole foreground process group: when that is ours,
    the command in our group gets it from the terminal, not from us."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return True
        except OSError:
            continue
    return False


class SignalRelay:
    """Hands SIGINT, SIGTERM and SIGHUP to the command (the third one kills it); before the
    command runs, a signal stops the start-up, and one that arrives while it starts is passed
    on once it runs.

    Without a terminal whose Ctrl-C reaches the command by itself (CI, a background job), the
    command runs in a process group of its own: signals go to the whole group, so what the
    command started stops with it, and what is left of the group is killed at the end. At a
    terminal the command stays in the terminal's foreground group, where it can read the
    terminal, and the terminal's first Ctrl-C is not sent again.
    """

    def __init__(self) -> None:
        self.child: Popen | None = None
        self.own_group = False
        self.received: list[int] = []
        self._pending: list[int] = []  # received before the command ran: not passed on yet
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalRelay:
        for signum in _RELAYED:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def adopt(self, child: Popen, *, own_group: bool) -> None:
        """Relay to ``child`` from now on, starting with what arrived while it started.

        A handler that runs after ``self.child`` is set passes its signal on itself; one that
        ran before left it in ``_pending`` (handlers run whole, between two lines here)."""
        self.own_group = own_group
        self.child = child
        while self._pending:
            self._pass_on(self._pending.pop(0), len(self.received))

    def end(self) -> None:
        """Kill what is left of the command (its group, when it has one) and stop relaying."""
        child, self.child = self.child, None
        if child is None:
            return
        if self.own_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)  # the group outlives its leader
        elif child.poll() is None:
            child.kill()
        child.wait()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.child is None:
            self._pending.append(signum)
        elif not (
            signum == signal.SIGINT
            and len(self.received) == 1
            and not self.own_group
            and _in_terminal_foreground()
        ):
            self._pass_on(signum, len(self.received))

    def _pass_on(self, signum: int, count: int) -> None:
        child = self.child
        assert child is not None
        if count >= 3:
            signum = signal.SIGKILL
        if self.own_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signum)
        elif child.poll() is None:
            child.send_signal(signum)


# -- the proxy --------------------------------------------------------------------------------


def _stopped_with_us() -> Callable[[], None] | None:
    """Linux: the process gets SIGTERM when we die, even by SIGKILL, so none is left behind."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # we were gone before the line above took effect
            os._exit(1)

    return set_parent_death_signal


class EphemeralProxy:
    """spendbrake's proxy on a free loopback port, for the length of one run."""

    def __init__(self, arguments: Sequence[str], *, log: Path, env: Mapping[str, str]) -> None:
        self.arguments, self.log, self.env = list(arguments), log, dict(env)
        self.process: Popen | None = None

    def start(self, relay: SignalRelay) -> int:
        """Start it and return its port once it listens."""
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "spendbrake.proxy", *self.arguments],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
                preexec_fn=_stopped_with_us(),
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if match := _LISTENING.search(self.log.read_bytes()):
                return int(match.group(1))
            if self.process.poll() is not None:
                raise RunError(f"the proxy did not start:\n{self.output()}")
            if relay.received:
                raise RunError("interrupted before the command started", 128 + relay.received[0])
            time.sleep(0.05)
        raise RunError(f"the proxy did not listen within {READY_TIMEOUT_S:.0f} s:\n{self.output()}")

    def died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def output(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-30:])

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()  # mitmproxy settles what it still holds, then exits
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the ledger -------------------------------------------------------------------------------


def read_calls(ledger: Path, agent: str, session: str) -> list[CallRow]:
    """The session's rows, oldest first (the proxy may still be writing others)."""
    if not ledger.exists():
        return []
    conn = sqlite3.connect(ledger, timeout=5)  # it only reads; WAL lets the proxy write on
    try:
        rows = conn.execute(
            """
            SELECT started_at, forwarded_model, state, reason, input_tokens, output_tokens,
                held_nanos, actual_nanos
            FROM calls WHERE agent = ? AND session = ? ORDER BY id
            """,
            (agent, session),
        ).fetchall()
    finally:
        conn.close()
    return [CallRow(datetime.fromisoformat(row[0]), *row[1:]) for row in rows]


def _wait_until_settled(ledger: Path, agent: str, session: str) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while any(r.state == "held" for r in read_calls(ledger, agent, session)):
        if time.monotonic() > deadline:
            return  # the proxy settles the rest at their holds when it stops
        time.sleep(0.05)


# -- the run ----------------------------------------------------------------------------------


def _proxy_for(
    workdir: Path,
    options: RunOptions,
    config_text: str,
    upstream: str | None,
    environment: Mapping[str, str],
    session: str,
) -> tuple[EphemeralProxy, Path, Path]:
    """Write the run's files and make its proxy (not started yet); with the CA bundle its
    command must trust and the ledger it writes."""
    config_file = workdir / "spendbrake.toml"
    config_file.write_text(config_text)
    confdir = workdir / "certs"
    caller_cas = caller_ca_files(environment)
    bundle = certs.write_bundle(confdir, caller_cas)
    if upstream and (credentials := upstream_auth(upstream)):
        # mitmproxy reads its confdir's config.yaml: the password stays off the command line,
        # which every local user can read.
        secret = confdir / "config.yaml"
        secret.touch(mode=0o600)
        secret.write_text(f"upstream_auth: {json.dumps(credentials)}\n")
    ledger = options.ledger_path or workdir / "ledger.db"
    try:
        SQLiteLedger(ledger).close()  # fail here, readably, not inside the proxy
    except LedgerUnavailable as e:
        raise RunError(str(e)) from None
    users = {s.partition("=")[0].strip() for s in options.sets}
    # A call without the run's credentials (a client that drops them from the proxy URL) still
    # belongs to the run.
    sets = [f"spendbrake_default_agent={options.agent}", f"spendbrake_default_session={session}"]
    if options.block_all and "spendbrake_block_all" not in users:
        sets.append("spendbrake_block_all=true")
    # A corporate proxy on the way may re-sign the providers' certificates with the CA that the
    # caller's clients trust: the run's proxy, the one that talks to it now, trusts it too.
    if (
        upstream
        and "ssl_verify_upstream_trusted_ca" not in users
        and (upstream_cas := certs.write_upstream_bundle(confdir, caller_cas))
    ):
        sets.append(f"ssl_verify_upstream_trusted_ca={upstream_cas}")
    arguments = mitmdump_arguments(
        listen_host="127.0.0.1",
        listen_port=0,
        confdir=confdir,
        config=config_file,
        ledger=ledger,
        sets=[*sets, *options.sets],
        scripts=options.scripts,
        upstream_proxy=upstream,
    )
    return EphemeralProxy(arguments, log=workdir / "proxy.log", env=environment), bundle, ledger


def _start(
    command: Sequence[str], env: Mapping[str, str], stdout: IO[bytes] | None, *, own_group: bool
) -> Popen:
    try:
        # Without its proxy the command's calls could only fail: it goes when we go.
        return subprocess.Popen(
            list(command),
            env=env,
            stdout=stdout,
            preexec_fn=_stopped_with_us(),
            process_group=0 if own_group else None,
        )
    except FileNotFoundError:
        raise RunError(f"command not found: {command[0]}", 127) from None
    except PermissionError:
        raise RunError(f"command not executable: {command[0]}", 126) from None


def run_sandboxed(
    command: Sequence[str],
    options: RunOptions,
    *,
    environment: Mapping[str, str],
    stdout: IO[bytes] | None = None,
    watch: Callable[[RunSummary], None] | None = None,
) -> RunResult:
    """Run ``command`` through an ephemeral proxy; ``watch`` sees the summary as it grows."""
    if conflicts := own_option_conflicts(options.sets):
        raise RunError(f"--set {conflicts[0]}", 2)
    config_text, config = prepare_config(options)
    budget = config.limits(options.agent).session_nanos
    upstream = upstream_proxy_of(environment)
    if upstream:
        try:
            upstream_mode(upstream)
        except ValueError as e:
            raise RunError(f"HTTPS_PROXY: {e}") from None
    with SignalRelay() as relay:
        workdir = Path(tempfile.mkdtemp(prefix="spendbrake-run-"))
        proxy: EphemeralProxy | None = None
        try:
            agent, session = options.agent, new_session_id(utc_now())
            proxy, bundle, ledger = _proxy_for(
                workdir, options, config_text, upstream, environment, session
            )
            port = proxy.start(relay)
            env = child_environment(environment, proxy_url(agent, session, port), bundle)
            started_at, clock = utc_now(), time.monotonic()

            def so_far() -> RunSummary:
                return summarize(
                    read_calls(ledger, agent, session),
                    agent=agent,
                    session=session,
                    started_at=started_at,
                    seconds=time.monotonic() - clock,
                    budget_nanos=budget,
                )

            own_group = not _in_terminal_foreground()
            child = _start(command, env, stdout, own_group=own_group)
            relay.adopt(child, own_group=own_group)
            while True:
                try:
                    returncode = child.wait(timeout=0.2 if watch else None)
                    break
                except subprocess.TimeoutExpired:
                    assert watch is not None
                    watch(so_far())
            seconds = time.monotonic() - clock
            relay.end()  # what the command left running makes no more calls
            failure = proxy.output() if proxy.died() else None
            _wait_until_settled(ledger, agent, session)
            proxy.stop()
            # The run lasted as long as its command, not the moments spent closing the proxy.
            return RunResult(returncode, replace(so_far(), seconds=seconds), failure)
        finally:
            relay.end()
            if proxy is not None:
                proxy.stop()
            shutil.rmtree(workdir, ignore_errors=True)


def execute(
    command: Sequence[str], options: RunOptions, *, summary_json: Path | None, console: Console
) -> int:
    """``spendbrake run``: run, write the summary JSON, print the summary; the exit code."""
    if summary_json is not None and not summary_json.parent.is_dir():
        raise RunError(f"--summary-json: there is no directory {summary_json.parent}")
    if dropped := dropped_no_proxy(os.environ):
        console.print(
            "spendbrake run: NO_PROXY entries left out, they would send LLM calls past the "
            f"budget: {', '.join(dropped)}",
            soft_wrap=True,
        )
    result = run_sandboxed(command, options, environment=os.environ)
    code = exit_code(result.returncode, result.summary)
    if summary_json is not None:
        try:
            summary_json.write_text(json.dumps(result.summary.as_json(), indent=2) + "\n")
        except OSError as e:
            console.print(f"spendbrake run: could not write --summary-json: {e}")
            code = code or 1
    if result.proxy_failure is not None:
        console.print(f"spendbrake run: the proxy stopped during the run:\n{result.proxy_failure}")
    console.print(render_summary(result.summary, code, result.returncode), soft_wrap=True)
    return code
