"""The process at the other end of a loopback connection, for process identification rules.

On Linux the socket is found in ``/proc/net/tcp{,6}`` by its two ports, and its owner by the
socket's inode among processes' open files: processes that owned earlier connections are
looked at first, then the socket owner's other processes, then everyone. This is blocking file
work (milliseconds with hundreds of processes), so the proxy runs it once per connection on a
thread, never on its event loop. Elsewhere psutil's system-wide connection table is used.

Only what the proxy's user may see is found: another user's processes need root (or the same
user), and processes in other network namespaces (containers) are invisible.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator

import psutil

from spendbrake.access import ProcessInfo

_ESTABLISHED = "01"


class PeerProcesses:
    """Finds processes by their connection; remembers which processes connected before."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._recent_pids: dict[int, None] = {}  # insertion-ordered set, newest last

    def find(self, peer_port: int, listen_port: int) -> ProcessInfo | None:
        """The process whose socket has local port ``peer_port`` and is connected to
        ``listen_port``; None when it cannot be seen (gone, or another user's)."""
        if sys.platform.startswith("linux") and os.path.isdir(os.path.join(self.proc, "net")):
            pid = self._pid_from_proc(peer_port, listen_port)
        else:
            pid = _pid_from_psutil(peer_port, listen_port)
        if pid is None:
            return None
        self._recent_pids.pop(pid, None)
        self._recent_pids[pid] = None
        if len(self._recent_pids) > 256:
            self._recent_pids.pop(next(iter(self._recent_pids)))
        return describe(pid)

    def _pid_from_proc(self, peer_port: int, listen_port: int) -> int | None:
        found = self._socket_inode(peer_port, listen_port)
        if found is None:
            return None
        inode, uid = found
        target = f"socket:[{inode}]"
        for pid in self._candidates(uid):
            if self._has_open(pid, target):
                return pid
        return None

    def _socket_inode(self, peer_port: int, listen_port: int) -> tuple[str, int] | None:
        wanted = (f":{peer_port:04X}", f":{listen_port:04X}")
        for table in ("tcp", "tcp6"):
            try:
                with open(os.path.join(self.proc, "net", table)) as f:
                    next(f, None)  # the header
                    for line in f:
                        fields = line.split()
                        if len(fields) < 10 or fields[3] != _ESTABLISHED:
                            continue
                        if fields[1].endswith(wanted[0]) and fields[2].endswith(wanted[1]):
                            return fields[9], int(fields[7])
            except OSError:
                continue
        return None

    def _candidates(self, uid: int) -> Iterator[int]:
        seen: set[int] = set()
        recent = list(reversed(self._recent_pids))
        everyone = self._all_pids()
        same_user = (pid for pid in everyone if self._uid_of(pid) == uid)
        for pid in _chain(recent, same_user, everyone):
            if pid not in seen:
                seen.add(pid)
                yield pid

    def _all_pids(self) -> list[int]:
        try:
            return [int(name) for name in os.listdir(self.proc) if name.isdigit()]
        except OSError:
            return []

    def _uid_of(self, pid: int) -> int | None:
        try:
            return os.stat(os.path.join(self.proc, str(pid))).st_uid
        except OSError:
            return None

    def _has_open(self, pid: int, target: str) -> bool:
        fd_dir = os.path.join(self.proc, str(pid), "fd")
        try:
            names = os.listdir(fd_dir)
        except OSError:  # gone, or another user's
            return False
        for name in names:
            try:
                if os.readlink(os.path.join(fd_dir, name)) == target:
                    return True
            except OSError:
                continue
        return False


def _chain(*parts: Iterable[int]) -> Iterator[int]:
    for part in parts:
        yield from part


def _pid_from_psutil(peer_port: int, listen_port: int) -> int | None:
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        laddr, raddr = conn.laddr, conn.raddr
        if laddr and raddr and laddr.port == peer_port and raddr.port == listen_port:
            return conn.pid or None
    return None


def describe(pid: int) -> ProcessInfo | None:
    """Name, executable, command line and user of a process; parts another user's process
    hides are empty."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            name = process.name()
            exe = _or_empty(process.exe)
            cmdline = " ".join(_or_empty(process.cmdline) or [])
            user = _or_empty(process.username)
    except psutil.Error:
        return None
    return ProcessInfo(pid=pid, name=name, exe=exe, cmdline=cmdline, user=user)


def _or_empty[T](read: Callable[[], T]) -> T | str:
    try:
        return read()
    except psutil.Error:
        return ""
