"""A throwaway PostgreSQL cluster for the tests: initdb into a temporary directory, start it on a
free loopback port, stop it and remove it at the end.

Used by the ``postgres_url`` session fixture (conftest) and by ``scripts/bench_pg.py``. The
server runs as an ordinary user: as root, as the ``postgres`` user the Debian package creates
(PostgreSQL refuses to run as root). ``$SPENDBRAKE_TEST_POSTGRES`` (a ``postgresql://`` URL)
uses a server of your own instead, and nothing is started.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from spendbrake.ledger_url import PostgresUrl

URL_ENV = "SPENDBRAKE_TEST_POSTGRES"
HOW_TO_RUN = (
    "PostgreSQL tests need a server: run scripts/test as root (it installs the 'postgresql' "
    "package), put PostgreSQL's bin directory (initdb, pg_ctl) on PATH, or set "
    f"{URL_ENV}=postgresql://USER@HOST:PORT/DB to a database you may create schemas in"
)


def schema_url(server: str, schema: str) -> PostgresUrl:
    """The server's URL with a search path: the ledger's tables go into ``schema``."""
    joiner = "&" if "?" in server else "?"
    return PostgresUrl(f"{server}{joiner}options=-csearch_path%3D{schema}")


class NoPostgres(RuntimeError):
    """No PostgreSQL server can be started here; the message says how to get one."""


def binaries() -> Path:
    """The directory holding initdb and pg_ctl: on PATH, else Debian's versioned directory."""
    if found := shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    if not versions:
        raise NoPostgres(HOW_TO_RUN)
    return Path(versions[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_server_user() -> tuple[list[str], str]:
    """The prefix that runs a command as the server's user, and that user's name."""
    if os.geteuid() != 0:
        return [], pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise NoPostgres(f"running as root and there is no 'postgres' user. {HOW_TO_RUN}") from None
    return ["runuser", "-u", "postgres", "--"], "postgres"


@contextmanager
def running_cluster() -> Iterator[str]:
    """A server for the duration of the block; yields the URL of its ``postgres`` database."""
    if url := os.environ.get(URL_ENV):
        yield url
        return
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.close()


class Cluster:
    """A server the tests stop and start on purpose (the database going away mid-run)."""

    def __init__(self) -> None:
        self.bin_dir = binaries()
        self.prefix, self.user = _as_server_user()
        self.top = Path(tempfile.mkdtemp(prefix="spendbrake-pg-"))
        self.data, self.sockets = self.top / "data", self.top / "sockets"
        self.sockets.mkdir()
        if self.prefix:
            shutil.chown(self.top, user=self.user)
            shutil.chown(self.sockets, user=self.user)
        self.port = _free_port()
        try:
            self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "--no-sync")
        except NoPostgres:
            shutil.rmtree(self.top, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self.prefix, str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise NoPostgres(f"{tool} {' '.join(args)} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        # fsync=off: the machine does not crash in a test, and the OS keeps what was written.
        # synchronous_commit stays on: with it off, a commit lives only in the server's memory
        # for a moment, and stopping the server "like a crash" (stop below) loses calls that
        # were held, forwarded and settled.
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=off "
            "-c max_connections=300"
        )
        log = str(self.top / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        """Immediately, like a crash: clients' connections are cut, nothing is said to them."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.is_running():
            with suppress(NoPostgres):  # stopped already: the directory goes anyway
                self.stop()
        shutil.rmtree(self.top, ignore_errors=True)
