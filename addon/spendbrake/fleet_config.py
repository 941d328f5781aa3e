"""The ``[fleet]`` section: what a proxy may do while its PostgreSQL ledger is unreachable.

Parsed here so ``config`` stays about limits:

```toml
[fleet]
offline_allowance = 0.05                 # a share of each agent's remaining daily budget
offline_journal = "/var/lib/spendbrake/offline-journal.db"   # optional
```

Off by default: without ``offline_allowance`` a proxy whose database is away refuses every
metered call (503 ``ledger_unavailable``). See docs/fleet.md for the bound on what a fleet may
spend past its limits while it runs on the allowance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from spendbrake.config_errors import ConfigError, reject_unknown

MAX_SHARE = Decimal("0.25")
_FLEET_KEYS = frozenset({"offline_allowance", "offline_journal"})


class FleetConfigError(ConfigError):
    """A [fleet] value cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class FleetConfig:
    offline_share: Decimal | None = None  # None: fail closed while the database is away
    offline_journal: Path | None = None  # None: beside the default ledger (see journal_path)

    def journal_path(self, data_dir: Path) -> Path:
        return self.offline_journal or data_dir / "offline-journal.db"


def parse_fleet(table: object, where: str, relative_to: Path | None) -> FleetConfig:
    if table is None:
        return FleetConfig()
    if not isinstance(table, Mapping):
        raise FleetConfigError(f"{where}: [fleet] must be a table")
    reject_unknown(table, _FLEET_KEYS, where, "fleet.", FleetConfigError)
    return FleetConfig(
        offline_share=_share(table.get("offline_allowance"), where),
        offline_journal=_journal(table.get("offline_journal"), where, relative_to),
    )


def _share(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FleetConfigError(f"{where}: fleet.offline_allowance must be a number, e.g. 0.05")
    try:
        share = Decimal(str(value))
    except InvalidOperation:
        raise FleetConfigError(
            f"{where}: fleet.offline_allowance {value!r} is not a number; write e.g. 0.05"
        ) from None
    if not Decimal(0) < share <= MAX_SHARE:
        raise FleetConfigError(
            f"{where}: fleet.offline_allowance {value!r} must be above 0 and at most "
            f"{MAX_SHARE} (a share of each agent's remaining daily budget); leave it out to "
            "refuse calls while the database is away"
        )
    return share


def _journal(value: Any, where: str, relative_to: Path | None) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise FleetConfigError(f"{where}: fleet.offline_journal must be a file path")
    path = Path(value).expanduser()
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path  # relative to the config file, like the ledger
    return path
