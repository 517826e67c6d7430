"""Is a group member's process still there? The liveness probe of consumer
groups (FORMAT.rst M-7 members carry pid, process start time and host),
used by group membership (pylog.group) and group administration
(pylog.admin) alike.

Thread safety: pure functions over /proc and kill(pid, 0), and
:class:`ProbeCache`, whose shared table is only ever read and replaced
entry by entry (atomic under the GIL), so any thread may use it.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable

from .groupstate import Member

HOST = socket.gethostname()


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), None if unknown;
    used with the pid to tell a live member from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):       # zombie: the process is gone
        return -1
    return int(fields[19])


def process_alive(member: Member) -> bool:
    """The liveness probe: is ``member``'s process still there? Members of
    other hosts are (only their heartbeats tell)."""
    if member.host != HOST:
        return True
    if member.pid is None or member.pid <= 0:
        return False        # kill(0 or -n) would probe a process group
    try:
        os.kill(member.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OverflowError:
        return False
    start = process_start_time(member.pid)
    if start == -1:
        return False
    return start is None or member.start in (None, start)


PROBE_TTL_S = 0.5       # how long a member found alive is believed alive
_REMEMBER_MAX = 4096    # entries of each table; then it starts afresh


class ProbeCache:
    """:func:`process_alive` with its answers remembered, per (host, pid,
    process start time): a member found alive is not probed again for
    ``ttl_s`` seconds, one found dead (with a known start time, so the pid
    cannot be reused under the same key) never again. Every member of a
    group probes every other one at its looks, so without this the
    syscalls grow with the square of the members; with it, at most one
    probe per member and ``ttl_s`` per process, and a dead member is seen
    dead at most ``ttl_s`` late. ``probe`` and ``monotonic`` are
    injectable; one cache (:data:`cached_alive`) serves the process."""

    def __init__(self, probe: Callable[[Member], bool] = process_alive,
                 ttl_s: float = PROBE_TTL_S,
                 monotonic: Callable[[], float] = time.monotonic):
        self._probe = probe
        self._ttl_s = ttl_s
        self._monotonic = monotonic
        self._alive_until: dict[tuple, float] = {}
        self._dead: set[tuple] = set()

    def __call__(self, member: Member) -> bool:
        key = (member.host, member.pid, member.start)
        if key in self._dead:
            return False
        now = self._monotonic()
        until = self._alive_until.get(key)
        if until is not None and now < until:
            return True
        if self._probe(member):
            if until is None and len(self._alive_until) >= _REMEMBER_MAX:
                self._alive_until = {}      # (stale entries of departed members)
            self._alive_until[key] = now + self._ttl_s
            return True
        self._alive_until.pop(key, None)
        if member.start is not None:
            if len(self._dead) >= _REMEMBER_MAX:
                self._dead = set()
            self._dead.add(key)
        return False


cached_alive = ProbeCache()
