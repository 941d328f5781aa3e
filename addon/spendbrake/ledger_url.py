"""Where the ledger lives: a SQLite file (the embedded default) or a PostgreSQL database.

A ledger location is written as a path (``~/.local/share/spendbrake/ledger.db``), a
``sqlite:///absolute/path.db`` URL, or a ``postgresql://`` URL (libpq's own syntax, so
``host``, ``dbname``, ``sslmode``, ``options=-csearch_path=team_a`` and the ``PG*`` variables all
work). ``open_ledger`` opens either, so callers never care which one they got.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from spendbrake.postgres_ledger import PostgresLedger
    from spendbrake.sqlite_ledger import SQLiteLedger

POSTGRES_SCHEMES = ("postgresql", "postgres")
SQLITE_PREFIX = "sqlite://"


@dataclass(frozen=True)
class PostgresUrl:
    """A ``postgresql://`` ledger. ``str()`` is the URL itself (it is passed on to mitmdump);
    ``redacted()`` hides a password, for messages and logs. Better still, keep the password out
    of the URL (``PGPASSWORD``, ``~/.pgpass``): command lines are visible to every local user."""

    url: str

    def __str__(self) -> str:
        return self.url

    def redacted(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))


type LedgerLocation = Path | PostgresUrl


class BadLedgerLocation(ValueError):
    """A ledger location that is neither a path nor a URL spendbrake can open."""


def is_url(value: str) -> bool:
    return "://" in value


def parse_location(value: str | os.PathLike[str]) -> LedgerLocation:
    """A path or URL, as given on the command line, in the environment or in the config."""
    text = os.fspath(value)
    if not is_url(text):
        return Path(text).expanduser()
    scheme = text.split("://", 1)[0].lower()
    if scheme in POSTGRES_SCHEMES:
        return PostgresUrl(text)
    if scheme == "sqlite":
        path = text[len(SQLITE_PREFIX) :]
        if not path.startswith("/"):
            raise BadLedgerLocation(
                f"ledger {text!r}: a SQLite URL names an absolute path, as in "
                "sqlite:///var/lib/spendbrake/ledger.db (three slashes)"
            )
        return Path(path)
    raise BadLedgerLocation(
        f"ledger {text!r}: expected a file path, sqlite:///PATH or postgresql://HOST/DB"
    )


def describe(location: LedgerLocation) -> str:
    """The location as messages name it (no password)."""
    return location.redacted() if isinstance(location, PostgresUrl) else str(location)


def open_ledger(
    location: LedgerLocation, *, owner: str | None = None
) -> SQLiteLedger | PostgresLedger:
    """The ledger at ``location``, migrated to the current schema."""
    if isinstance(location, PostgresUrl):
        from spendbrake.postgres_ledger import PostgresLedger

        return PostgresLedger(location, owner=owner)
    from spendbrake.sqlite_ledger import SQLiteLedger

    return SQLiteLedger(location, owner=owner)
