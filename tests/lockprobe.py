"""Who holds pylog's inter-process locks, asked the way FORMAT.rst defines
them, independently of pylog's own lock code (so a test of that code cannot
pass by sharing its mistake):

* L-2: ``pylog.lock`` byte 0, an OFD lock (shared while a process has the
  log open for writing);
* L-7: ``meta.lock`` byte 0, an OFD write lock while a metadata write
  transaction runs;
* P-3: a partition's append lock, the ``uint32`` at byte 128 of
  ``partition.state`` holding the holder Log's token (0 free); the holder is
  alive while some open file description holds an OFD read lock on byte
  ``2**32 + token`` of ``pylog.lock``. A non-zero word whose holder is dead
  is not held: the next appender takes it over.

Locks are queried with ``F_OFD_GETLK`` on a fresh open file description,
which holds nothing, so every conflict reported is someone else's (other
processes, or Logs open in this one). Linux only.

Thread safety: stateless; every call opens and closes its own descriptors.
"""

import fcntl
import os
import struct

LOCK_FILE = "pylog.lock"                 # L-2
META_LOCK_FILE = "meta.lock"             # L-7
STATE_FILE = "partition.state"           # P-2
APPEND_LOCK_WORD = 128                   # P-3: uint32, host byte order
LIVENESS_BASE = 2 ** 32                  # P-3: byte 2**32 + token of pylog.lock

_FLOCK = "hhqqi4x"                       # struct flock (Linux, 64-bit off_t)
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", None)


def conflicting_lock(path: str, start: int, kind: int = fcntl.F_WRLCK) -> bool:
    """Would a lock of ``kind`` on byte ``start`` of ``path`` conflict with a
    lock someone holds (F_OFD_GETLK)? False when ``path`` does not exist."""
    if F_OFD_GETLK is None:
        raise OSError("F_OFD_GETLK is not available: the probe needs Linux")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        req = struct.pack(_FLOCK, kind, os.SEEK_SET, start, 1, 0)
        got = fcntl.fcntl(fd, F_OFD_GETLK, req)
        return struct.unpack(_FLOCK, got)[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)


def append_lock_word(state_path: str) -> int:
    """The append lock word (P-3) of a ``partition.state``: 0 when free,
    else the token of the Log that took it."""
    fd = os.open(state_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        raw = os.pread(fd, 4, APPEND_LOCK_WORD)
    finally:
        os.close(fd)
    return struct.unpack("=I", raw)[0] if len(raw) == 4 else 0


def token_alive(log_dir: str, token: int) -> bool:
    """Is the Log whose append lock token is ``token`` alive (P-3)?"""
    return conflicting_lock(os.path.join(log_dir, LOCK_FILE), LIVENESS_BASE + token)


def append_lock_holder(log_dir: str, state_path: str) -> int:
    """The live holder's token of the append lock of ``state_path``, or 0
    when nobody alive holds it (free, or left by a dead holder)."""
    token = append_lock_word(state_path)
    return token if token and token_alive(log_dir, token) else 0


def held_locks(log_dir: str) -> list[str]:
    """Every pylog lock of the log at ``log_dir`` that a live holder has:
    a description per lock, empty when all are free."""
    held = []
    if conflicting_lock(os.path.join(log_dir, LOCK_FILE), 0):
        held.append(f"{LOCK_FILE} byte 0 (L-2: the log is open for writing)")
    if conflicting_lock(os.path.join(log_dir, META_LOCK_FILE), 0):
        held.append(f"{META_LOCK_FILE} byte 0 (L-7: a metadata write runs)")
    try:
        names = sorted(os.listdir(log_dir))
    except FileNotFoundError:          # not made yet: nothing to hold
        return held
    for d in names:
        st = os.path.join(log_dir, d, STATE_FILE)
        if os.path.isfile(st):
            token = append_lock_holder(log_dir, st)
            if token:
                held.append(f"{d}/{STATE_FILE} append lock (P-3: token {token} alive)")
    return held
