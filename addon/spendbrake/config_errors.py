"""The one error a configuration raises, and the check every section makes of its keys.

Sections parsed in modules of their own (``[access]``, ``[alerts]``, ``[fleet]``) raise their
own subclass, so each names its section; callers catch ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file, the key and the fix."""


def reject_unknown(
    table: Mapping[str, Any],
    allowed: frozenset[str],
    where: str,
    prefix: str,
    error: type[ConfigError] = ConfigError,
) -> None:
    """A misspelt key is a limit that silently does not exist: say which one."""
    for key in table:
        if key not in allowed:
            raise error(f"{where}: unknown key {prefix}{key}")
