"""Record state transitions of share groups, and the share files of a Log
(FORMAT.rst Q-*; the file itself is pylog.sharestate).

Transitions, as Kafka's share partitions make them (KIP-932):

- acquire: Available → Acquired (delivery count + 1: Kafka counts a
  delivery when it hands a record out), with the owner and a lock deadline;
  offsets past SPEO enter the window the same way, as long as fewer than
  ``max_in_flight`` entries are Available or Acquired (Delayed ones do not
  count: a delayed retry does not take an in-flight slot).
- an Acquired record whose owner's Log died, or whose lock deadline passed,
  goes back to Available — or to Archived when its delivery count reached
  the delivery limit (reason ``delivery_limit``);
- accept → Acknowledged; release → Available (Delayed until a deadline
  with ``delay_ms``; Archived at the delivery limit); reject → Archived
  (reason ``rejected``); renew → the lock deadline moves.
- Records Archived with a dead-letter topic are copied there exactly once
  (Dead-lettering, then Archived: pylog.sharedlq, Q-5).
- SPSO moves past the prefix of Acknowledged / Archived records; records
  that retention deleted below the log start before they were done are
  reported as lost (Q-4).

Thread safety: every function here runs under the share file's lock.
Durability: see pylog.sharestate; :class:`ShareFiles` checkpoints to LMDB.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from itertools import repeat
from typing import Any, NamedTuple

from . import shareconfig
from . import sharestate as ss
from .commitstore import split_okey
from .errors import InvalidArgument, PylogError
from .handles import FD_EXHAUSTED, too_many_open_files
from .reader import Cursor
from .records import TopicPartition
from .sharedlq import DELIVERY_LIMIT, REJECTED, DeadLetters

_log = logging.getLogger("pylog")
ACCEPT, RELEASE, REJECT, RENEW = "accept", "release", "reject", "renew"
ACK_TYPES = (ACCEPT, RELEASE, REJECT, RENEW)
DELAY_MS_MAX = 7 * 86_400_000      # the longest delay_ms of a release
RECORD_LOCK_MS_MAX = 3_600_000     # the longest record_lock_ms of a group


class Target(NamedTuple):
    """Where a partition's Archived records go: its dead-letter topic (None:
    nowhere) and the partition they are read from."""
    tp: TopicPartition
    source: Any
    dlq: DeadLetters | None


def _commit(f: ss.ShareFile, changes: list[tuple[int, int, int, int]],
            doomed: list[tuple[int, int, str]], target: Target) -> None:
    """Write ``changes`` and archive ``doomed`` [(offset, count, reason)]
    all or nothing; with a dead-letter topic, in Q-5's three steps."""
    if target.dlq is None or not doomed:
        changes = changes + [(off, ss.ARCHIVED, count, 0) for off, count, _ in doomed]
        if changes:
            f.write_batch_locked(changes)
        return
    marks = target.dlq.marks(target.tp, doomed)
    f.write_batch_locked(changes + marks, dead_lettering=True)      # Q-5 step 1
    _finish(f, [(off, count, mark) for off, _s, count, mark in marks], target, False)


def _finish(f: ss.ShareFile, entries: list[tuple[int, int, int]], target: Target,
            look_first: bool) -> None:
    if target.dlq is not None:
        target.dlq.copy(target.tp, target.source, entries, look_first)   # Q-5 step 2
    f.write_batch_locked([(off, ss.ARCHIVED, count, 0) for off, count, _ in entries])


def finish_dead_letters(f: ss.ShareFile, target: Target) -> None:
    """Q-6: records a holder left Dead-lettering (it died, or its copy
    failed) get their copy — unless the dead-letter topic has it — and are
    Archived. Cheap when there are none (a header flag)."""
    if not f.head[ss.DLQ_PENDING]:
        return
    cap = f.capacity
    entries = [(off, f.counts[off % cap], f.deadlines[off % cap])
               for off in f.positions(ss.DEAD_LETTERING)]
    if entries:
        _finish(f, entries, target, True)
    f.head[ss.DLQ_PENDING] = 0


def _expire(f: ss.ShareFile, now: int, limit: int, dead: list[int],
            target: Target) -> None:
    """Acquired records of dead owners, or past their deadline, back to
    Available (Archived at the delivery limit); delays that ended too.
    The next deadline and delay end are stored, and dead owners' numbers
    freed, only once the changes are written: when writing them raises (a
    full disk, a busy metadata lock while the dead-letter topic is made),
    the next acquisition finds the same records due and tries again.

    Deadlines are wall-clock times (Q-2). One further ahead than a lock
    (:data:`RECORD_LOCK_MS_MAX`) or a delay (:data:`DELAY_MS_MAX`), plus a
    minute (processes read the clock at different moments), could reach
    from now was set before the clock was stepped back (an NTP step, a VM
    restored, an RTC wrong at boot then put right): it is cut to that
    bound, where waiting it out would hold the record (and the window
    behind it) for as long as the step, years for a wrong RTC. The bound
    is the longest lock, not this consumer's: one made before
    ``alter_share_group`` raised record_lock_ms keeps the old value, and
    must not cut the longer locks of the others (delivered again while
    still held, their acknowledgements refused)."""
    h = f.head
    lock_cap = now + RECORD_LOCK_MS_MAX + 60_000
    delay_cap = now + DELAY_MS_MAX + 60_000
    check_deadline = now >= h[ss.MIN_DEADLINE] or lock_cap < h[ss.MIN_DEADLINE] < ss.NEVER
    changes: list[tuple[int, int, int, int]] = []
    doomed: list[tuple[int, int, str]] = []
    next_deadline = next_delay = None
    if dead or check_deadline:
        nxt = ss.NEVER
        deadset = set(dead)
        for off in f.positions(ss.ACQUIRED):
            i = off % f.capacity
            dl = f.deadlines[i]
            if f.owner_of[i] in deadset or dl <= now:
                count = f.counts[i]
                if count >= limit:
                    doomed.append((off, count, DELIVERY_LIMIT))
                else:
                    changes.append((off, ss.AVAILABLE, count, 0))
            else:
                if dl > lock_cap:               # (the holder keeps it)
                    dl = lock_cap
                    changes.append((off, ss.ACQUIRED, f.counts[i], dl))
                nxt = min(nxt, dl)
        next_deadline = nxt
    if now >= h[ss.MIN_DELAY] or delay_cap < h[ss.MIN_DELAY] < ss.NEVER:
        nxt = ss.NEVER
        for off in f.positions(ss.DELAYED):
            i = off % f.capacity
            dl = f.deadlines[i]
            if dl <= now:
                changes.append((off, ss.AVAILABLE, f.counts[i], 0))
            else:
                if dl > delay_cap:
                    dl = delay_cap
                    changes.append((off, ss.DELAYED, f.counts[i], dl))
                nxt = min(nxt, dl)
        next_delay = nxt
    _commit(f, changes, doomed, target)
    # (a dead owner's number freed before its records are Available would
    # hand them to the next consumer given that number)
    if next_deadline is not None:
        h[ss.MIN_DEADLINE] = next_deadline
        for n in dead:
            f.free_owner_locked(n)
    if next_delay is not None:
        h[ss.MIN_DELAY] = next_delay


def trim_to_log(f: ss.ShareFile, log_start: int, log_end: int) -> list[tuple[int, int]]:
    """Q-4: SPSO below the log start (retention deleted records): the
    records not yet done there are lost. SPEO past the log end (records
    lost with a power loss): the window shrinks to it. Returns the lost
    records as (first, last) offset ranges."""
    h, cap = f.head, f.capacity
    lost: list[tuple[int, int]] = []
    if h[ss.SPSO] < log_start:
        for off in range(h[ss.SPSO], min(h[ss.SPEO], log_start)):
            i = off % cap
            if f.states[i] not in (ss.ACKNOWLEDGED, ss.ARCHIVED, ss.EMPTY):
                if lost and lost[-1][1] == off - 1:
                    lost[-1] = (lost[-1][0], off)
                else:
                    lost.append((off, off))
            f.states[i] = ss.EMPTY
        if h[ss.SPEO] < log_start:          # never delivered at all
            first = h[ss.SPEO]
            if lost and lost[-1][1] == first - 1:
                lost[-1] = (lost[-1][0], log_start - 1)
            else:
                lost.append((first, log_start - 1))
        h[ss.SPSO] = log_start
        h[ss.SPEO] = max(h[ss.SPEO], log_start)
        h[ss.LOST] += sum(b - a + 1 for a, b in lost)
        f.bump()
    if h[ss.SPEO] > log_end:
        for off in range(max(log_end, h[ss.SPSO]), h[ss.SPEO]):
            f.states[off % cap] = ss.EMPTY
        h[ss.SPEO] = max(log_end, h[ss.SPSO])
        h[ss.SPSO] = min(h[ss.SPSO], h[ss.SPEO])
        f.bump()
    return lost


def acquire(f: ss.ShareFile, owner_of: Callable[[], int], now: int, lock_ms: int, max_records: int,
            max_in_flight: int, limit: int, log_start: int, log_end: int,
            target: Target) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Acquire up to ``max_records`` for the owner number ``owner_of()``
    gives (asked once dead owners' numbers are free): ([(offset, delivery
    count)] in offset order, [(first, last)] ranges lost to retention now)."""
    lost = trim_to_log(f, log_start, log_end)
    finish_dead_letters(f, target)
    _expire(f, now, limit, f.dead_owners_locked(), target)
    owner = owner_of()
    h, cap = f.head, f.capacity
    deadline = now + lock_ms
    got: list[tuple[int, int]] = []
    states, counts, owners, deadlines = f.states, f.counts, f.owner_of, f.deadlines
    for off in f.positions(ss.AVAILABLE):
        if len(got) >= max_records:
            break
        i = off % cap
        c = counts[i] + 1
        deadlines[i] = deadline
        owners[i] = owner
        counts[i] = c
        states[i] = ss.ACQUIRED
        got.append((off, c))
    if len(got) < max_records and h[ss.SPEO] < log_end:
        room = min(max_records - len(got), log_end - h[ss.SPEO],
                   cap - (h[ss.SPEO] - h[ss.SPSO]),
                   max_in_flight - f.count_in_flight())
        if room > 0:
            speo = h[ss.SPEO]
            f.acquire_new_locked(speo, room, owner, deadline)
            got += zip(range(speo, speo + room), repeat(1))
            h[ss.SPEO] = speo + room
    if got:
        h[ss.MIN_DEADLINE] = min(h[ss.MIN_DEADLINE], deadline)
        f.bump()
    return got, lost


def apply_acks(f: ss.ShareFile, owner: int, acks: list[tuple[int, str, int]], now: int,
               lock_ms: int, limit: int, target: Target, accepts_only: bool = False) -> list[int]:
    """Apply one partition's acknowledgements [(offset, type, delay_ms)], one
    per offset, all or nothing (Q-2); ``accepts_only``: every one is an
    accept (a contiguous run of them is applied a ring span at a time).
    Returns the offsets this owner no longer holds (its lock expired and
    another took the record, or retention deleted it): then nothing was
    applied."""
    finish_dead_letters(f, target)
    if accepts_only:
        first = min(a[0] for a in acks)
        if max(a[0] for a in acks) - first == len(acks) - 1 and \
                f.accept_run_locked(first, len(acks), owner):
            return []           # (else: the general path says what is wrong)
    h, cap = f.head, f.capacity
    spso, speo = h[ss.SPSO], h[ss.SPEO]
    states, owners, counts = f.states, f.owner_of, f.counts
    acquired = ss.ACQUIRED
    bad = [off for off, _t, _d in acks
           if not spso <= off < speo or states[off % cap] != acquired
           or owners[off % cap] != owner]
    if bad:
        return bad
    changes: list[tuple[int, int, int, int]] = []
    doomed: list[tuple[int, int, str]] = []
    for off, kind, delay in acks:
        count = counts[off % cap]
        if kind == ACCEPT:
            changes.append((off, ss.ACKNOWLEDGED, count, 0))
        elif kind == RENEW:
            changes.append((off, acquired, count, now + lock_ms))
        elif kind == REJECT or count >= limit:
            doomed.append((off, count, REJECTED if kind == REJECT else DELIVERY_LIMIT))
        elif delay > 0:
            # a wall-clock deadline, so that it holds across a reboot
            changes.append((off, ss.DELAYED, count, now + delay))
        else:
            changes.append((off, ss.AVAILABLE, count, 0))
    _commit(f, changes, doomed, target)
    return []


def applied_before(f: ss.ShareFile, owner: int,
                   acks: list[tuple[int, str, int]]) -> list[int]:
    """The offsets of ``acks`` (a batch whose :func:`apply_acks` a Ctrl-C
    or an error cut short, before or after it applied them; its dead-letter
    copies finished since) when the batch was
    applied, else []. They apply all or nothing (Q-2), so the batch was
    applied when each record is where its acknowledgement puts it: an
    accept's Acknowledged, a reject's Archived, a release's out of this
    owner's hands (its lock may have ended instead: the record is
    delivered again either way), or past the window (done). A record
    another consumer took after this one's lock ended is none of those:
    the batch is then applied again, and reported as no longer held."""
    h, cap = f.head, f.capacity
    spso, speo = h[ss.SPSO], h[ss.SPEO]
    states, owners = f.states, f.owner_of
    offs = []
    for off, kind, _delay in acks:
        if kind == RENEW:
            continue        # (still Acquired either way: says nothing)
        offs.append(off)
        if off < spso:
            continue
        if off >= speo:
            return []
        state = states[off % cap]
        if kind == ACCEPT:
            done = state == ss.ACKNOWLEDGED
        elif kind == REJECT:
            done = state == ss.ARCHIVED
        else:
            done = not (state == ss.ACQUIRED and owners[off % cap] == owner)
        if not done:
            return []
    return offs


def release_owner(f: ss.ShareFile, owner: int, target: Target) -> None:
    """close(): everything ``owner`` holds back to Available; its number freed."""
    finish_dead_letters(f, target)
    changes = []
    for off in f.positions(ss.ACQUIRED):
        i = off % f.capacity
        if f.owner_of[i] == owner:
            changes.append((off, ss.AVAILABLE, f.counts[i], 0))
    if changes:
        f.write_batch_locked(changes)
    f.free_owner_locked(owner)


def give_back(f: ss.ShareFile, owner_in: Callable[[ss.ShareFile, TopicPartition], int],
              tp: TopicPartition, got: list[tuple[int, int]], limit: int) -> None:
    """Acquired (offset, count)s ``got`` of ``tp`` that the consumer could
    not deliver (their read failed, out of descriptors) back at once, not
    at their lock's end; their acquisition stays counted (a delivery is
    counted when a poll acquires the record). Those below the delivery
    ``limit`` become Available; those at it keep their lock, ended now, so
    that the next acquisition archives them as any lock ending at the
    limit (acquired again, they would be delivered past it). Takes the
    file's lock; ``owner_in(f, tp)`` is the consumer's owner number there."""
    with f.locked():
        owner, cap = owner_in(f, tp), f.capacity
        mine = [(off, f.counts[off % cap]) for off, _c in got
                if f.states[off % cap] == ss.ACQUIRED and f.owner_of[off % cap] == owner]
        f.write_batch_locked([(off, ss.AVAILABLE, n, 0) if n < limit else
                              (off, ss.ACQUIRED, n, 0) for off, n in mine])
        if any(n >= limit for _off, n in mine):
            f.head[ss.MIN_DEADLINE] = 0


class ShareFiles:
    """The share files a Log opened, and their checkpoints into LMDB (Q-3).
    A file stays open while a share consumer of the Log uses it; the last
    one's close checkpoints and closes it (:meth:`release`). Thread-safe."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self.pid = os.getpid()
        self._mutex = threading.Lock()
        self._files: dict[bytes, ss.ShareFile] = {}
        # consumers using each file of _files, by id(file) (get, release):
        # an idle file kept open would hold two descriptors and a map until
        # the Log closes, and a process making consumers of many groups
        # would run out of them
        # (a checkpoint counts as a user while it reads a file: a file is
        # never closed under one, nor before its state reached LMDB; no lock
        # is held across checkpoints, which wait for files' locks another
        # process may hold long: one file's must not stall the others')
        self._users: dict[int, int] = {}
        # files of deleted incarnations, dropped from _files: a consumer of
        # this Log may still be inside one, so they are closed with the Log
        self._retired: list[ss.ShareFile] = []
        self.dir = os.path.join(log.path, "meta", "share")

    def get(self, group: str, topic: str, partition: int, capacity: int,
            initial: Callable[[], int], topic_id: str | None = None) -> ss.ShareFile:
        """The file of (group, topic, partition), opened (and made, from
        LMDB or at ``initial()``: the auto_offset_reset offset) once for
        the incarnation ``topic_id`` of the topic (L-4): one opened for a
        deleted incarnation is opened again."""
        key = ss.share_key(group, topic, partition)
        with self._mutex:
            f = self._files.get(key)
            if f is not None:
                if f.topic_id == topic_id:
                    self._users[id(f)] = self._users.get(id(f), 0) + 1
                    return f
                self._retired.append(f)
                self._users.pop(id(f), None)
            os.makedirs(self.dir, exist_ok=True)
            meta = self._log.meta

            def load() -> tuple[int, int, list[ss.Run]]:
                raw = meta.info_get(key, "read share state")
                if raw is None:
                    return 0, initial(), []
                return ss.decode_state(raw, f"{group}/{topic}-{partition}")

            token, live_fd = self._log.liveness()
            # a file whose state LMDB does not have is a deleted topic's
            # left behind (or one made by a process that died before it
            # registered it, with nothing acquired yet): start it anew
            fresh = meta.info_get(key, "read share state") is None
            path = os.path.join(self.dir, ss.file_name(key))
            # (at least a second: the metadata_timeout of 0, "one try", would
            # fail every poll that finds another consumer at the file)
            # The file stays open while the Log is (two descriptors and a
            # map, not bounded by max_open_files): out of them, the Log's
            # idle segments are closed and it is tried once more, then
            # TooManyOpenFilesError / TooManyMapsError, not a bare OSError
            f = self._log.handles.retry(
                f"open the share state of group {group!r}, {topic}-{partition} "
                "(a share consumer keeps one open per partition it reads)",
                lambda: ss.ShareFile(path, key, capacity, token, live_fd, load,
                                     fresh=fresh,
                                     lock_timeout_s=max(1.0, self._log.metadata_timeout)),
                maps=True)
            f.topic_id = topic_id
            self._files[key] = f
            self._users[id(f)] = 1
        # a new share group is listed (share_groups, pylog queues) at once
        try:
            if meta.info_get(key, "read share state") is None:
                with f.locked():
                    seq, spso, runs = f.runs_locked()
                meta.info_update([key], "register a share group", lambda now: {}
                                 if now[key] is not None else
                                 {key: ss.encode_state(-1, spso, runs)})
        except BaseException:
            # (the caller never gets it: counted, it would never be closed)
            with self._mutex:
                if self._files.get(key) is f:
                    self._users[id(f)] -= 1
            raise
        return f

    def release(self, files: list[ss.ShareFile]) -> None:
        """A share consumer of this Log closed: of the ``files`` it used,
        those no other consumer of the Log uses are checkpointed and closed
        (opened again by the next consumer that needs them). One whose
        checkpoint fails stays open until a later checkpoint succeeds."""
        idle = []
        with self._mutex:
            for f in files:
                n = self._users.get(id(f))
                if n is not None and self._files.get(f.key) is f:
                    self._users[id(f)] = n - 1
                    if n == 1:
                        idle.append(f)
        if idle:
            try:
                self._checkpoint(idle)
            except PylogError as exc:
                _log.warning("share state not checkpointed at a consumer's close, "
                             "kept open for the next checkpoint: %s", exc)
                return
            self._close_idle(idle)

    def _close_idle(self, files: list[ss.ShareFile]) -> None:
        """Close those of ``files`` no consumer (nor checkpoint) uses
        whose state LMDB has."""
        with self._mutex:
            idle = [f for f in files if self._files.get(f.key) is f
                    and self._users.get(id(f)) == 0 and f.head[ss.SEQ] == f.head[ss.CKPT]]
            for f in idle:
                del self._files[f.key]
                del self._users[id(f)]
        for f in idle:
            f.close()

    def checkpoint(self, only: list[ss.ShareFile] | None = None) -> int:
        """Q-3: copy the changed files' state into LMDB, newest wins (the
        stored seq), after the records this process wrote (dead-letter
        copies) are durable. Returns how many were copied. Every file's
        (``only`` None) closes those no consumer uses any more."""
        n = self._checkpoint(only)
        if only is None:
            with self._mutex:
                idle = [f for f in self._files.values() if not self._users.get(id(f))]
            self._close_idle(idle)
        return n

    def _checkpoint(self, only: list[ss.ShareFile] | None) -> int:
        with self._mutex:
            files = list(self._files.values()) if only is None else only
            pinned = [f for f in files if self._files.get(f.key) is f]
            for f in pinned:        # (a user until done: not closed under it)
                self._users[id(f)] += 1
            # (neither open here nor retired: closed idle meanwhile, its
            # state in LMDB; it may be closing now, in another thread)
            files = pinned + [f for f in files if any(f is r for r in self._retired)]
        try:
            return self._checkpoint_pinned(files)
        finally:
            with self._mutex:
                for f in pinned:
                    if self._files.get(f.key) is f:
                        self._users[id(f)] -= 1

    def _checkpoint_pinned(self, files: list[ss.ShareFile]) -> int:
        snaps = []
        for f in files:
            if f.fd < 0 or f.head[ss.SEQ] == f.head[ss.CKPT]:
                continue
            with f.locked():
                snaps.append((f, *f.runs_locked()))
        if not snaps:
            return 0
        log = self._log
        if log.sync != "always":        # (with "always" every append is durable)
            log.flush_appended()

        def newer(stored: dict[bytes, bytes | None]) -> dict[bytes, bytes]:
            out = {}
            for f, seq, spso, runs in snaps:
                old = stored[f.key]
                if old is None or _unlinked(f):
                    # deleted with its topic (the key, then the file): never
                    # brought back, also over a new topic's registered key
                    continue
                if len(old) >= 8 and int.from_bytes(old[:8], "little", signed=True) >= seq:
                    continue
                out[f.key] = ss.encode_state(seq, spso, runs)
            return out
        log.meta.info_update([f.key for f, *_ in snaps], "checkpoint share state", newer)
        for f, seq, *_ in snaps:
            if f.fd >= 0 and f.head[ss.CKPT] < seq:
                f.head[ss.CKPT] = seq
        return len(snaps)

    def forget(self, keys: list[bytes], remove: bool = True,
               only: ss.ShareFile | None = None) -> None:
        """The states ``keys`` were deleted with their topic: their files
        are not handed out again (a consumer that still holds one finds its
        partition deleted); with ``remove`` (the deleting Log) they are
        unlinked, so that a topic made again under the name gets new ones.
        With ``only``, a key is forgotten only while that file holds it
        (not one opened since for the topic made again)."""
        with self._mutex:
            for k in keys:
                if only is None or self._files.get(k) is only:
                    f = self._files.pop(k, None)
                    if f is not None:
                        self._retired.append(f)
                        self._users.pop(id(f), None)
        if remove:
            remove_files(self.dir, keys)

    def close(self) -> None:
        with self._mutex:
            files, self._files = list(self._files.values()) + self._retired, {}
            self._retired = []
            self._users = {}
        for f in files:
            f.close()


_STATE_NAMES = {ss.ACQUIRED: "acquired", ss.DELAYED: "delayed"}


def _blocked_by(row: dict[str, Any], end: int, first: dict[str, Any] | None,
                cap: int | None) -> dict[str, Any] | None:
    """The record that holds a full window (README "Delays"): records wait
    past SPEO while SPEO - SPSO is the file's whole ring and SPSO cannot
    move past ``first``, the record there, still acquired or delayed. None
    otherwise (or for a state read from LMDB, which has no ring)."""
    if first is None or cap is None or end <= row["speo"] or \
            row["speo"] - row["spso"] < cap or first["state"] not in _STATE_NAMES:
        return None
    return {"offset": first["offset"], "state": _STATE_NAMES[first["state"]],
            "until_ms": first["until_ms"]}


def _unlinked(f: ss.ShareFile) -> bool:
    """Was ``f``'s file removed (by a topic delete, ShareFiles.forget)?"""
    try:
        return f.fd >= 0 and os.fstat(f.fd).st_nlink == 0
    except OSError:
        return False


def remove_files(directory: str, keys: list[bytes]) -> None:
    """Unlink the share files of ``keys`` in ``directory`` (those that
    exist); a process that still maps one keeps its copy, and its state
    never reaches LMDB again (ShareFiles.checkpoint)."""
    for k in keys:
        try:
            os.unlink(os.path.join(directory, ss.file_name(k)))
        except FileNotFoundError:
            pass


def validate_ack(kind: object, delay_ms: object) -> int:
    if kind not in ACK_TYPES:
        raise InvalidArgument(f"acknowledge type {kind!r}; expected one of {ACK_TYPES}")
    if delay_ms is None:
        return 0
    if kind != RELEASE:
        raise InvalidArgument("delay_ms is for type='release' only")
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or \
            not 0 <= delay_ms <= DELAY_MS_MAX:
        raise InvalidArgument(f"delay_ms={delay_ms!r}; expected int in [0, 604800000]")
    return delay_ms


def describe_share_groups(log: Any) -> list[dict[str, Any]]:
    """Every share-partition of the log: group, topic, partition, SPSO, SPEO,
    records available, acquired (with owner and lock end), delayed, archived
    and lost, the group's settings (Q-7), and the age of the oldest record
    not yet done — from the shared file when it is of this boot, else from
    LMDB (Q-1, Q-3).
    A monitoring snapshot: taken without the files' locks."""
    found = log.meta.info_items(ss.KEY_PREFIX, "list share groups")
    out = []
    now = int(time.time() * 1000)
    sdir = os.path.join(log.path, "meta", "share")
    live_fd = _liveness_probe(log)
    # (closed on every way out: a snapshot out of descriptors raises,
    # and the probe left open would keep the process out of them)
    try:
        settings: dict[str, dict[str, Any] | None] = {}
        for key, raw in found:
            parts = split_okey(key[len(ss.KEY_PREFIX):])
            if parts is None:
                continue
            group, topic, partition = parts
            row: dict[str, Any] = {"group": group, "topic": topic, "partition": partition}
            if group not in settings:
                settings[group] = shareconfig.stored(log.meta, group)
            row["settings"] = settings[group]           # Q-7 (None: made before them)
            try:
                part = log.partition(topic, partition)
                st: Any = part.state()
            except PylogError:
                st = None
            snap = ss.snapshot(os.path.join(sdir, ss.file_name(key)), key,
                               None if st is None else st.log_start_offset)
            if snap is not None and live_fd >= 0:
                alive: dict[int, bool] = {}
                for h in snap["held"]:
                    tok = h["owner_token"]
                    if tok not in alive:
                        alive[tok] = ss.token_alive(live_fd, tok)
                    h["owner_alive"] = alive[tok]
            if snap is None:
                _seq, spso, runs = ss.decode_state(raw, f"{group}/{topic}-{partition}")
                speo = runs[-1][1] + 1 if runs else spso
                # (from the log start on: below it, the next acquisition finds
                # the records lost, Q-4)
                lo = 0 if st is None else st.log_start_offset

                def count(state: int) -> int:
                    return sum(max(0, r[1] - max(r[0], lo) + 1) for r in runs if r[2] == state)
                snap = {"spso": spso, "speo": speo, "acquired": 0, "held": [],
                        "delayed": count(ss.DELAYED), "available": count(ss.AVAILABLE),
                        "dead_lettering": count(ss.DEAD_LETTERING),
                        "acknowledged_in_window": count(ss.ACKNOWLEDGED),
                        "archived_total": None, "lost_to_retention": None}
            row.update(snap)
            first, cap = row.pop("first", None), row.pop("capacity", None)
            row["blocked_by"] = None
            row["oldest_unacknowledged_age_ms"] = None
            if st is None:
                row["end_offset"] = None
                out.append(row)
                continue
            end = row["end_offset"] = st.next_offset
            # never delivered yet: those retention deleted are not available but
            # lost, as the next acquisition will count them (Q-4, trim_to_log);
            # an operator looks when the workers are down, before any acquisition
            log_start = min(max(st.log_start_offset, row["speo"]), end)
            row["available"] += end - log_start
            if row["lost_to_retention"] is not None:
                row["lost_to_retention"] += max(0, log_start - row["speo"])
            row["blocked_by"] = _blocked_by(row, end, first, cap)
            row["oldest_unacknowledged_age_ms"] = _oldest_age(
                part, max(row["spso"], st.log_start_offset), end, now)
            out.append(row)
    finally:
        if live_fd >= 0:
            os.close(live_fd)
    return out


def _oldest_age(part: Any, oldest: int, end: int, now_ms: int) -> int | None:
    """The age in ms of the record at ``oldest`` (the SPSO, or the log
    start when retention passed it: the records before are gone), None
    when there is none or it cannot be read (retention moved on again)."""
    if oldest >= end:
        return None
    try:
        recs = part.fetch(Cursor(oldest), 1)
    except PylogError:
        return None
    return max(0, now_ms - recs[0][1]) if recs else None


def _liveness_probe(log: Any) -> int:
    """A descriptor of pylog.lock of its own (probing never conflicts with
    the Log's own locks), or -1; out of descriptors TooManyOpenFilesError
    (-1 would count every holder dead)."""
    path = os.path.join(log.path, "pylog.lock")
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in FD_EXHAUSTED:
            raise too_many_open_files(exc, f"open {path} to see who holds share "
                                      "records") from None
        return -1


def share_group_live(log: Any, group: str) -> int:
    """How many live Logs hold a place (an owner entry, Q-1) in a
    share-partition of ``group``: its consumers that took records."""
    prefix = ss.KEY_PREFIX + group.encode() + b"\0"        # (Q-3 keys, M-6 shape)
    sdir = os.path.join(log.path, "meta", "share")
    live_fd = _liveness_probe(log)
    if live_fd < 0:
        return 0
    alive: set[int] = set()
    try:
        for key, _raw in log.meta.info_items(prefix, "list a share group"):
            snap = ss.snapshot(os.path.join(sdir, ss.file_name(key)), key)
            for tok in (snap or {}).get("owner_tokens", ()):
                if tok not in alive and ss.token_alive(live_fd, tok):
                    alive.add(tok)
    finally:
        os.close(live_fd)
    return len(alive)
