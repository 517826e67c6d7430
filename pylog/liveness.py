"""Is a group member's process still there? The liveness probe of consumer
groups (FORMAT.rst M-7 members carry pid, process start time and host),
used by group membership (pylog.group) and group administration
(pylog.admin) alike.

Thread safety: pure functions over /proc and kill(pid, 0).
"""

from __future__ import annotations

import os
import socket

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
