"""Which proxy process owns a hold, and whether it still runs.

An owner is ``host:pid:start-ticks``: the start time tells a live process from a recycled pid,
so holds of a proxy that died are settled by the next one on this host, and never those of a
proxy that still runs.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _process_stat(pid: int) -> tuple[str, str] | None:
    """The state letter and the kernel's start time of ``pid`` (None where /proc cannot tell).

    The start time tells a live process from a recycled pid; the state tells a zombie (dead,
    not yet reaped by its parent) from a live one.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def _process_start_ticks(pid: int) -> str:
    stat = _process_stat(pid)
    return stat[1] if stat else "?"


def current_owner() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start_ticks(pid)}"


def owner_is_alive(owner: str) -> bool:
    """Whether the process that wrote ``owner`` still runs (only decidable on this host)."""
    try:
        host, pid_text, ticks = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return True  # not an owner this module wrote: not ours to judge
    if host != socket.gethostname():
        return True  # another host's process: not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _process_stat(pid)
    if stat is None:
        return True  # no /proc: existence is all that can be known
    state, started = stat
    return state != "Z" and (ticks == "?" or started == ticks)
