"""The clean-shutdown record (FORMAT.rst P-9, Kafka's
``.kafka_cleanshutdown``): what lets the first opener (L-2) skip the
recovery (P-4) of every partition that nobody wrote since the log was last
closed cleanly, so that reopening costs one small read per partition
instead of a scan, a truncation and an index check each.

The last process to close the log (it gets ``pylog.lock`` exclusively)
stores in each partition's ``partition.state`` whose published record it
finds settled a mark: a random nonce of this close and a check word over
the nonce and the record. It then makes everything durable with one
``syncfs`` (segments, indexes, the marked state pages), and only then
writes the nonce to ``clean-shutdown`` in the log directory (fsync'd,
renamed, directory fsync'd). The first opener reads the file, skips the
recovery of each partition whose mark carries that nonce and matches its
record, and removes the file durably before anyone can write; so a mark
left in a state page by an earlier session never vouches again, even when
a power loss later brings that stale page back.

Thread safety: the functions run with ``pylog.lock`` held exclusively (no
other process has the log open), from one thread of the Log being opened
or closed. Durability: as above; a failure anywhere in writing leaves no
``clean-shutdown`` file, and the next open recovers everything.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import secrets
import struct
import sys

from . import _format
from .files import NotARegularFile, open_regular
from .segment import fsync_dir, list_segment_bases, segment_path
from .sharedstate import DELETED, STATE_FILE, State, mix64

_log = logging.getLogger("pylog")

CLEAN_FILE = "clean-shutdown"          # L-1, P-9
_FILE = struct.Struct("<4sQQ")         # b"PLCS", nonce, check
_FILE_MAGIC = b"PLCS"
_MARK = struct.Struct("=QQ")           # P-9: nonce, check at STATE_CLEAN
# the prefix of partition.state a mark covers: record (P-2), index position
# (P-3), takeover flag and the lock word (P-3), the durable mark between
_HEAD = _format.STATE_LOCK_WORD + 8
_RECORD = struct.Struct("=4sIq6q")     # magic, version, seq, the six fields


def _check(nonce: int, head: bytes) -> int:
    """P-9's check word: splitmix64's finalizer chained over the nonce and
    the 64 record bytes (P-2) as eight uint64."""
    h = mix64(_format.STATE_MAGIC ^ nonce)
    for (word,) in struct.iter_unpack("=Q", head[:_format.STATE_SIZE]):
        h = mix64(h ^ word)
    return h


def _settled(head: bytes) -> bool:
    """Does this state hold a published record nobody is changing or left
    half done: magic, an even seqlock, not deleted, the append lock free
    (a dead holder's token means leftovers past the end, P-3) and no
    takeover pending?"""
    if len(head) < _HEAD:
        return False
    magic, _version, seq, next_offset, *_ = _RECORD.unpack_from(head)
    lock_word, = struct.unpack_from("=I", head, _format.STATE_LOCK_WORD)
    takeover, = struct.unpack_from("=I", head, _format.STATE_TAKEOVER)
    return (magic == _format.STATE_MAGIC_BYTES and seq % 2 == 0 and
            next_offset != DELETED and lock_word == 0 and takeover == 0)


def _read_head(directory: str) -> bytes | None:
    try:
        fd = open_regular(os.path.join(directory, STATE_FILE), os.O_RDONLY,
                          what="partition state file")
    except (OSError, NotARegularFile):
        return None
    try:
        return os.pread(fd, _HEAD, 0)
    finally:
        os.close(fd)


def read_nonce(root: str) -> int | None:
    """The nonce in ``root``'s ``clean-shutdown`` (P-9), or None when there
    is none or it fails its check."""
    try:
        fd = open_regular(os.path.join(root, CLEAN_FILE), os.O_RDONLY,
                          what="clean-shutdown file")
    except (OSError, NotARegularFile):
        return None
    try:
        data = os.pread(fd, _FILE.size, 0)
    finally:
        os.close(fd)
    if len(data) != _FILE.size:
        return None
    magic, nonce, check = _FILE.unpack(data)
    if magic != _FILE_MAGIC or nonce == 0 or check != mix64(nonce ^ _format.STATE_MAGIC):
        return None
    return nonce


def remove(root: str) -> None:
    """Remove ``clean-shutdown`` durably (P-9): done by every writable
    opener that finds it, before open returns, so that no write of this
    session can happen while the marks it names still vouch."""
    try:
        os.unlink(os.path.join(root, CLEAN_FILE))
    except FileNotFoundError:
        return
    fsync_dir(root)


def is_clean(directory: str, nonce: int | None) -> bool:
    """Was the partition in ``directory`` closed cleanly by the close that
    wrote ``nonce`` (P-9), with nothing changed since? Then its published
    state is true and durable and recovery (P-4) has nothing to do."""
    return clean_state(directory, nonce) is not None


def clean_state(directory: str, nonce: int | None) -> State | None:
    """The published state of the partition in ``directory`` when
    :func:`is_clean`, else None."""
    if nonce is None:
        return None
    head = _read_head(directory)
    if head is None or not _settled(head):
        return None
    mark_nonce, check = _MARK.unpack_from(head, _format.STATE_CLEAN)
    if mark_nonce != nonce or check != _check(nonce, head):
        return None
    return State(_RECORD.unpack_from(head)[3:])


def files_problem(directory: str, st: State) -> str | None:
    """P-9, P-12: do the segment files still hold what the clean state
    ``st`` says? The active segment must exist and reach the published
    end, and a segment must begin at the log start offset (or, after
    ``delete_records`` moved the start into a segment, before it). Files
    deleted or cut since the close (by hand: nothing of pylog ran) make
    the state a lie that the fast path must not serve. Costs two
    ``lstat`` calls; a listing only when the start lies inside a segment.
    Returns what is wrong, or None."""
    active = segment_path(directory, st.active_base)
    try:
        size = os.lstat(active).st_size
    except FileNotFoundError:
        return f"the active segment {active} is missing"
    if size < st.active_position:
        return (f"the active segment {active} is {size} bytes, short of its "
                f"published end {st.active_position}")
    if st.log_start_offset == st.active_base or \
            os.path.lexists(segment_path(directory, st.log_start_offset)):
        return None
    bases = [b for b in list_segment_bases(directory) if b <= st.active_base]
    if bases and bases[0] <= st.log_start_offset:
        return None
    return (f"no segment holds the log start offset {st.log_start_offset} "
            f"({segment_path(directory, st.log_start_offset)} is missing)")


def mark_all(root: str, directories) -> bool:
    """The last closer's part of P-9: mark each settled partition of
    ``directories`` with a fresh nonce, make the log's filesystem durable
    (``syncfs``), then publish the nonce in ``clean-shutdown``. Returns
    whether the file was written; any failure leaves none (the next open
    recovers everything) and is logged, never raised: the close has
    already succeeded."""
    nonce = secrets.randbits(64) | 1
    try:
        for directory in directories:
            _mark(directory, nonce)
        _syncfs(root)
        tmp = os.path.join(root, CLEAN_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, _FILE.pack(_FILE_MAGIC, nonce,
                                    mix64(nonce ^ _format.STATE_MAGIC)))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(root, CLEAN_FILE))
        fsync_dir(root)
    except OSError as exc:
        _log.warning("%s: no clean-shutdown record (%s); the next open "
                     "recovers every partition (P-9)", root, exc)
        return False
    return True


def _mark(directory: str, nonce: int) -> None:
    try:
        fd = open_regular(os.path.join(directory, STATE_FILE), os.O_RDWR,
                          what="partition state file")
    except NotARegularFile:
        return                             # recovery rebuilds it (P-4)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return                         # a partition never opened
        raise
    try:
        head = os.pread(fd, _HEAD, 0)
        if _settled(head):
            # (pwrite, not a map: the same page cache as every map of it)
            os.pwrite(fd, _MARK.pack(nonce, _check(nonce, head)), _format.STATE_CLEAN)
    finally:
        os.close(fd)


def _syncfs(root: str) -> None:
    """Write back the whole filesystem holding ``root``: every segment, index
    and state page of the log in one call (10,000 fdatasyncs would cost
    more than the recovery they save). ``os.sync`` where there is no
    ``syncfs``; it reports no error."""
    if not sys.platform.startswith("linux"):
        os.sync()
        return
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), root)
    finally:
        os.close(fd)
