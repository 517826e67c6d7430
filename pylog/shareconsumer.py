"""Share consumers: work queues on the log (Kafka's share groups, KIP-932).

Any number of share consumers of one group — threads and processes — take
records from the same partitions; each record is acquired by one consumer
at a time, acknowledged one by one, retried, and finally parked. The state
machine and its files are pylog.shareops and pylog.sharestate.

Thread safety: a ShareConsumer is used by one thread at a time (as
Kafka's; ``wakeup()`` from any); use one per thread. Not fork-safe: make one in the child (its
Log may be the parent's: it reopens itself there). Durability: acknowledgements are applied at
the next poll() or commit() as stores into the shared share-state map —
they survive a SIGKILL of the process at once, and reach LMDB on the Log's
checkpoints (every ``sync_interval_ms``, flush, close); with
``sync="always"`` commit() returns once they are in LMDB (fsynced).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from functools import partial
from itertools import repeat
from operator import add
from typing import Any, NamedTuple

from . import _native, shareconfig
from . import shareops as ops
from . import sharestate as ss
from .config import validate_group_id, validate_topic_name
from .consumerargs import poll_timeout
from .errors import (
    AcknowledgementError,
    ForkedLogError,
    InvalidArgument,
    LogClosed,
    OffsetOutOfRange,
    ReadOnlyLog,
    TooManyMapsError,
    TooManyOpenFilesError,
    TopicNotFound,
    not_transferable,
)
from .reader import Cursor
from .records import TopicPartition
from .sharedlq import DeadLetters
from .sharewait import ShareWaiting
from .store import FORKS, topic_slot

_log = logging.getLogger("pylog")
# how long each partition comes first in the polls of a group (_acquire)
_ROTATE_MS = 20
_tuple_new = tuple.__new__
# owner slots of share consumers garbage collected unclosed: (file,
# partition, owner number, member), freed by the next consumer of this
# process that registers in the file (_owner_in). A deque: its appends and
# pops are atomic, and a finalizer, which may run in any thread while that
# thread holds any lock, must take none.
_abandoned: deque[tuple[ss.ShareFile, TopicPartition, int, int]] = deque()


class ShareRecord(NamedTuple):
    """A record acquired by a share consumer: pylog.Record's fields plus
    ``delivery_count`` (1 on the first delivery)."""
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: Any            # (as pylog.Record's)
    value: Any
    headers: tuple[tuple[str, bytes | None], ...]
    delivery_count: int = 1


class ShareConsumer(ShareWaiting):
    """A member of share group ``group_id`` (see the module docstring and
    :meth:`pylog.Log.share_consumer`); its poll waits as pylog.sharewait
    says, and ``wakeup()`` (from any thread) ends that wait."""

    def __init__(self, log: Any, topics: tuple[str, ...], *, group_id: str,
                 record_lock_ms: int | None, delivery_limit: int | None,
                 max_in_flight: int | None, acknowledgement_mode: str,
                 dead_letter_topic: str | None, auto_offset_reset: str) -> None:
        _check_args(log, topics, group_id, acknowledgement_mode, auto_offset_reset)
        validate_settings(record_lock_ms, delivery_limit, max_in_flight, dead_letter_topic)
        if dead_letter_topic is not None and dead_letter_topic in topics:
            # (before Q-7 stores it as the group's setting)
            raise InvalidArgument(f"dead_letter_topic={dead_letter_topic!r} is one of "
                                  "the consumed topics")
        # the settings are the group's
        cfg = shareconfig.resolve(log.meta, group_id, {
            "record_lock_ms": record_lock_ms, "delivery_limit": delivery_limit,
            "max_in_flight": max_in_flight, "dead_letter_topic": dead_letter_topic})
        if cfg["dead_letter_topic"] in topics:
            raise InvalidArgument(f"share group {group_id!r} dead-letters to "
                                  f"{cfg['dead_letter_topic']!r}, one of the consumed topics")
        self._log = log
        self.topics = tuple(dict.fromkeys(topics))
        self.group_id = group_id
        self.record_lock_ms: int = cfg["record_lock_ms"]
        self.delivery_limit: int = cfg["delivery_limit"]
        self.max_in_flight: int = cfg["max_in_flight"]
        self.implicit = acknowledgement_mode == "implicit"
        self.dead_letter_topic: str | None = cfg["dead_letter_topic"]
        self._dlq = None if self.dead_letter_topic is None else \
            DeadLetters(log, group_id, self.dead_letter_topic)
        self.auto_offset_reset = auto_offset_reset
        self._member = int.from_bytes(os.urandom(4), "little") or 1
        self._owner: dict[TopicPartition, int] = {}       # owner number per file
        # records this consumer holds, and those of the last poll not yet
        # acknowledged (explicit mode raises on them, implicit accepts them)
        # (keys: (topic, partition, offset) and (topic, partition) tuples,
        # which TopicPartition keys equal)
        self._held: dict[tuple[str, int, int], ShareRecord] = {}
        self._unacked: dict[tuple[str, int, int], ShareRecord] = {}
        self._pending: dict[tuple[str, int], dict[int, tuple[int, str, int]]] = {}
        # acquired offsets without a record (gaps) whose share file another
        # held when they were found, with lock_wait false: accepted by the
        # next apply (_accept_gaps)
        self._gaps: dict[TopicPartition, list[int]] = {}
        # pylog.aio acknowledges on its loop while an apply may run off it
        self._ack_lock = threading.Lock()
        # partitions with pending acknowledgements other than plain accepts
        self._mixed: set[tuple[str, int]] = set()
        # partitions whose acknowledgements were being applied when a Ctrl-C
        # or an error came (still pending, maybe applied): shareops.applied_before
        self._applying: dict[tuple[str, int], Any] = {}
        self._failed: list[tuple[str, int, int]] = []
        self._touched: set[TopicPartition] = set()
        self._files: dict[TopicPartition, ss.ShareFile] = {}
        # where the last read of each partition stopped: the next acquisition
        # usually starts there, and a cursor there skips the index lookup
        self._cursors: dict[TopicPartition, Cursor] = {}
        # this consumer's place among its group's (None: not placed yet):
        # where its polls start, see _acquire
        self._home: int | None = None
        # the doorbell slot polls wait on (L-3): the topic's, or 0 for several
        self._slot = topic_slot(self.topics[0]) if len(self.topics) == 1 else 0
        self._closed = False
        self._forks = FORKS[0]
        #: False: poll() and commit() wait for no share file's lock, whose
        #: holder may be at an fdatasync (pylog.aio sets it: on an event
        #: loop); a partition found locked is skipped, its acknowledgements
        #: left pending, and ``busy`` set until the next apply
        self.lock_wait = True
        self.busy = False
        #: records retention deleted before they were done (Q-4), as this
        #: consumer found them: [(topic, partition, first offset, last offset)]
        self.lost: list[tuple[str, int, int, int]] = []
        # a consumer dropped without close() must not keep its owner slots
        # (MAX_OWNERS per partition) while its Log lives
        self._finalizer = weakref.finalize(self, _abandon, self._owner, self._files,
                                           self._member)
        self._finalizer.atexit = False

    @property
    def dead_lettered(self) -> int:
        """How many records this consumer copied to the dead-letter topic."""
        return 0 if self._dlq is None else self._dlq.copied

    # -- the share files ---------------------------------------------------------
    def _file(self, tp: TopicPartition) -> ss.ShareFile:
        f = self._files.get(tp)
        if f is not None and f.fd >= 0:
            return f
        part = self._log.partition(tp.topic, tp.partition)

        def initial() -> int:
            st = part.state()
            return int(st.log_start_offset if self.auto_offset_reset == "earliest"
                       else st.next_offset)
        f = self._files[tp] = self._log.share_files().get(
            self.group_id, tp.topic, tp.partition, 4 * self.max_in_flight, initial,
            part.topic_id)
        return f

    def _owner_in(self, f: ss.ShareFile, tp: TopicPartition) -> int:
        """This consumer's owner number in ``f`` (locked by the caller),
        registered at the first call."""
        n = self._owner.get(tp)
        if n is None:
            if _abandoned:
                _free_abandoned(self, f)
            n = self._owner[tp] = f.owner_slot_locked(self._member)
        return n

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in self.topics
                for p in range(self._log.partitions_for(t))]

    # -- poll ----------------------------------------------------------------------
    def poll(self, timeout_ms: float = 0, max_records: int = 500) -> list[ShareRecord]:
        """Acquired records (at most ``max_records``), waiting up to
        ``timeout_ms`` for some. Applies the acknowledgements made since the
        last poll first; in implicit mode every record of the last poll
        not acknowledged is accepted; in explicit mode such a record raises
        InvalidArgument (as Kafka's IllegalStateException)."""
        self._check()
        _int_in("max_records", max_records, 1, 1_000_000)
        wait_s = poll_timeout(None, timeout_ms)
        if self._unacked:
            if not self.implicit:
                raise _not_acknowledged(self._unacked)
            for rec in list(self._unacked.values()):
                self.acknowledge(rec, ops.ACCEPT)
        self._apply()
        deadline = time.monotonic() + wait_s
        bell = self._log.doorbell_pointer()     # (keeps the map)
        self._woken = False
        while True:
            seen = _native.doorbell_load_at(bell, self._slot) if bell is not None else 0
            out, batch = self._acquire(max_records)
            if out:
                # delivered (implicit mode accepts them at the next poll or
                # commit) as the last step: a Python return has no interrupt
                # point, so a Ctrl-C before this leaves them held, not
                # delivered: released at close() or at their lock's end,
                # never accepted unseen
                self._unacked = batch
                return out
            if not self._wait(bell, seen, deadline):
                return out

    def _acquire(self, max_records: int) -> tuple[list[ShareRecord], dict[Any, ShareRecord]]:
        """Records of the partitions in turn. A poll starts at partition
        (place + clock) mod n: the place is the consumer's owner number in
        the first partition's file (given out lowest free first, so live
        consumers hold 1, 2, 3...), the clock the wall-clock time in
        _ROTATE_MS steps, the same in every process. Consumers of a group
        so start on different partitions and move on together, never
        queueing for one file's lock, while each partition comes first in
        turn (no partition waits while another has records). A partition
        whose share file is locked is skipped while others give records
        (waited for only when no other partition gave any). Returns the
        records and them by key (held already; poll delivers them)."""
        tps = self._partitions()
        if self._home is None:
            # (not waiting for that lock: placed at a later poll then; nor
            # on a deleted topic's partition, which _acquire_from drops)
            try:
                f = self._file(tps[0])
                with f.locked(wait=False) as got:
                    if got:
                        self._home = self._owner_in(f, tps[0])
            except TopicNotFound:
                pass
        out: list[ShareRecord] = []
        now = int(time.time() * 1000)
        start = (self._member if self._home is None else self._home) + now // _ROTATE_MS
        busy = []
        for k in range(len(tps)):
            if len(out) >= max_records:
                break
            tp = tps[(start + k) % len(tps)]
            try:
                if not self._acquire_from(tp, max_records - len(out), now, out, wait=False):
                    busy.append(tp)
            except (TooManyOpenFilesError, TooManyMapsError):
                if not out:
                    raise
                busy = []   # deliver those acquired first, not hold them unseen
                break
        self.busy = self.busy or (bool(busy) and not self.lock_wait)
        for tp in busy:
            if out or not self.lock_wait:
                break
            self._acquire_from(tp, max_records, now, out, wait=True)
        batch = {rec[:3]: rec for rec in out}
        self._held.update(batch)
        return out, batch

    def _acquire_from(self, tp: TopicPartition, n: int, now: int, out: list[ShareRecord],
                      wait: bool) -> bool:
        """Up to ``n`` records of ``tp`` appended to ``out``; False (nothing
        done) when ``wait`` is false and the share file is locked."""
        try:
            return self._acquire_locked(tp, n, now, out, wait)
        except TopicNotFound:
            _topic_deleted(self, tp)
            if tp.topic not in self._log.topics():
                raise
            return True         # made again: read at the next poll

    def _replaced(self, tp: TopicPartition, part: Any) -> bool:
        """Whether the share file held for ``tp`` is of a deleted incarnation
        (L-4; the Log hands out the new one): if so, drop what was held."""
        f = self._files.get(tp)
        if f is None or f.topic_id == part.topic_id:
            return False
        _topic_deleted(self, tp, forget_topic=False)
        return True

    def _acquire_locked(self, tp: TopicPartition, n: int, now: int,
                        out: list[ShareRecord], wait: bool) -> bool:
        part = self._log.partition(tp.topic, tp.partition)
        self._replaced(tp, part)
        st = part.state()
        f = self._file(tp)
        # (a with block: a Ctrl-C landing between a lock() and its try would
        # leave the lock held, pylog.sharelock)
        with f.locked(wait) as taken:
            if not taken:
                return False
            got, lost = ops.acquire(
                f, partial(self._owner_in, f, tp), now, self.record_lock_ms, n,
                self.max_in_flight, self.delivery_limit, st.log_start_offset,
                st.next_offset, self._target(tp, part))
        self._report_lost(tp, lost)
        if got:
            self._touched.add(tp)
            try:
                out.extend(self._records(tp, part, got))
            except (TooManyOpenFilesError, TooManyMapsError):
                ops.give_back(f, self._owner_in, tp, got, self.delivery_limit)  # (not read)
                raise
        return True

    def _report_lost(self, tp: TopicPartition, lost: list[tuple[int, int]]) -> None:
        for first, last in lost:
            _log.warning("share group %r: retention deleted %d records of %s-%d "
                         "(offsets %d..%d) before they were acknowledged",
                         self.group_id, last - first + 1, tp.topic, tp.partition,
                         first, last)
            self.lost.append((tp.topic, tp.partition, first, last))

    def _records(self, tp: TopicPartition, part: Any,
                 got: list[tuple[int, int]]) -> list[ShareRecord]:
        """The records of acquired (offset, count)s, read in contiguous runs;
        offsets with no record (compacted away) are accepted as gaps."""
        out: list[ShareRecord] = []
        gaps: list[int] = []
        for i, k in _runs(got):
            run = got[i:k]
            first, n = run[0][0], k - i
            recs, start, stop = self._read_run(tp, part, first, n)
            if recs:
                part.shared.count_fetch(len(recs))      # P-10
            if len(recs) == n and recs[-1][2] == first + n - 1:      # no gaps
                # (C loops: no Python frame per record)
                out.extend(map(_tuple_new, repeat(ShareRecord),
                               map(add, recs, [(c,) for _o, c in run])))
                continue
            counts = dict(run)
            seen = set()
            for r in recs:
                c = counts.get(r[2])
                if c is None:
                    continue
                seen.add(r[2])
                out.append(_tuple_new(ShareRecord, (*r, c)))
            # only offsets the read passed over are gaps: those below `start`
            # retention deleted (counted lost by _read_run), those from `stop`
            # on were not read (a fetch cut short): they stay Acquired, not
            # delivered, and come back when their lock expires
            gaps += (off for off in counts if start <= off < stop and off not in seen)
        if gaps:
            self._accept_gaps(tp, part, gaps)
        return out

    def _read_run(self, tp: TopicPartition, part: Any, first: int,
                  n: int) -> tuple[list[Any], int, int]:
        """(the records of offsets first .. first + n - 1, the first offset
        the read covered, the offset it stopped at). Offsets retention
        deleted since their acquisition are counted lost at once (Q-4), as
        the next acquisition would: they must show in ``lost``, never be
        taken for gaps."""
        end = first + n
        cur = self._cursors.get(tp)
        if cur is None or cur.offset != first:
            cur = self._cursors[tp] = Cursor(first)
        recs: list[Any] = []
        start = first
        while cur.offset < end:
            try:
                more = part.fetch(cur, end - cur.offset, with_topic=True)  # plain tuples
            except OffsetOutOfRange:
                self._cursors.pop(tp, None)
                log_start = self._trim(tp, part)
                if log_start <= cur.offset:
                    raise
                start = min(log_start, end)
                cur = self._cursors[tp] = Cursor(start)
                continue
            if not more:
                break
            recs += more
        return recs, start, cur.offset

    def _trim(self, tp: TopicPartition, part: Any) -> int:
        """Count the records of ``tp`` below its log start lost (Q-4, under
        the file's lock); returns the log start. With ``lock_wait`` false
        and the file held by another, the next acquisition of ``tp``
        counts them (ops.acquire trims first): they stay acquired until
        then, neither delivered nor taken for gaps."""
        st = part.state()
        f = self._file(tp)
        with f.locked(self.lock_wait) as taken:
            if not taken:
                return int(st.log_start_offset)
            lost = ops.trim_to_log(f, st.log_start_offset, st.next_offset)
        self._report_lost(tp, lost)
        return int(st.log_start_offset)

    def _accept_gaps(self, tp: TopicPartition, part: Any, gaps: list[int]) -> None:
        """Accept acquired offsets that have no record, at once: queued, they
        would fail the app's commit when retention took them meanwhile (its
        trim counted them lost; having no record, nothing is lost). With
        ``lock_wait`` false and the file held by another, the next apply
        accepts them (``busy`` is set, as for acknowledgements)."""
        f = self._file(tp)
        with f.locked(self.lock_wait) as taken:
            if not taken:
                # (lock_wait false: another holds the file, maybe across an
                # fdatasync; not waited for on the caller's event loop)
                self._gaps.setdefault(tp, []).extend(gaps)
                self.busy = True
                return
            self._accept_gaps_locked(f, tp, part, gaps + self._gaps.pop(tp, []))

    def _accept_gaps_locked(self, f: ss.ShareFile, tp: TopicPartition, part: Any,
                            gaps: list[int]) -> None:
        """_accept_gaps' work, under ``f``'s lock."""
        acks = [(off, ops.ACCEPT, 0) for off in gaps]
        now = int(time.time() * 1000)
        owner = self._owner_in(f, tp)
        while acks:
            bad = set(ops.apply_acks(f, owner, acks, now, self.record_lock_ms,
                                     self.delivery_limit, self._target(tp, part), True))
            if not bad:
                break
            acks = [a for a in acks if a[0] not in bad]
        self._touched.add(tp)

    # -- acknowledgements ------------------------------------------------------------
    def acknowledge(self, record: ShareRecord, type: str = "accept",
                    delay_ms: int | None = None) -> None:
        """Acknowledge an acquired record: "accept" (done), "release" (give it
        back for another delivery, not before ``delay_ms`` when given; a
        delayed record holds no in-flight slot), "reject" (unprocessable:
        Archived, copied to the dead-letter topic) or "renew" (extend the
        lock by record_lock_ms, for long jobs; the record stays acquired).
        Applied at the next poll() or commit(). Raises LogClosed once this
        consumer or its Log is closed: the acknowledgement could never be
        applied (close() released the record)."""
        if self._closed or self._log._closed:
            # (the Log's flag, not its property: this is the per-record path)
            self._check()
        if not isinstance(record, ShareRecord):
            raise InvalidArgument(f"acknowledge({record!r}): expected a ShareRecord "
                                  "this consumer's poll returned")
        key = tuple(record[:3])
        plain = type == ops.ACCEPT and delay_ms is None
        delay = 0 if plain else ops.validate_ack(type, delay_ms)
        if key not in self._held:
            raise InvalidArgument(f"record {key[0]}-{key[1]} offset {key[2]} "
                                  "is not held by this consumer (not acquired by it, or "
                                  "already acknowledged)")
        # pending first: a Ctrl-C between these steps leaves the record
        # pending and still delivered (acknowledged again, the same), not
        # in neither (never acknowledged)
        with self._ack_lock:
            if not plain:
                self._mixed.add(key[:2])
            self._pending.setdefault(key[:2], {})[key[2]] = (key[2], type, delay)
        self._unacked.pop(key, None)
        if type != ops.RENEW:
            del self._held[key]

    def commit(self) -> None:
        """Apply the pending acknowledgements (implicit mode: accept every
        record delivered and not acknowledged first), all or nothing per partition;
        durable per the log's sync mode (module docstring). Raises
        AcknowledgementError naming the records this consumer no longer held
        (their partitions' acknowledgements were not applied)."""
        self._check()
        if self.implicit:           # as Kafka's: commit accepts what was delivered
            for rec in list(self._unacked.values()):
                self.acknowledge(rec, ops.ACCEPT)
        self._apply()
        if self._log.sync == "always":
            if self._dlq is not None:
                self._dlq.flush()
            files = [self._file(tp) for tp in self._touched]
            self._log.share_files().checkpoint(files)
        failed, self._failed = self._failed, []
        if failed:
            raise AcknowledgementError(
                f"{len(failed)} acknowledgements not applied: the records were no "
                f"longer held by this consumer (first: {failed[0]})", failed)

    def _apply(self) -> None:
        self.busy = False
        for tp in list(self._gaps):     # (found while another held the file)
            part = self._log.partition(tp.topic, tp.partition)
            f = self._file(tp)
            with f.locked(self.lock_wait) as taken:
                if not taken:
                    self.busy = True
                    continue
                self._accept_gaps_locked(f, tp, part, self._gaps.pop(tp))
        if not self._pending:
            return
        now = int(time.time() * 1000)
        pending, mixed = self._pending, self._mixed
        # a partition's acknowledgements leave `pending` only once applied:
        # when one raises (a full disk), they and the later partitions' stay,
        # for the next commit() or poll() to apply
        for key, acks in list(pending.items()):
            if not acks or key not in pending:  # (a Ctrl-C inside acknowledge(); a delete)
                pending.pop(key, None)
                continue
            tp = TopicPartition(*key)
            part = self._log.partition(tp.topic, tp.partition)
            if self._replaced(tp, part):    # (not the new topic's to apply)
                continue
            f = self._file(tp)
            with f.locked(self.lock_wait) as taken:
                if not taken:       # (lock_wait false: left pending, for later)
                    self.busy = True
                    continue
                owner = self._owner_in(f, tp)
                mark = self._applying.get(key)
                if mark is not None:
                    # a Ctrl-C or an error came after they were applied, or
                    # half applied (Q-5 step 1 written, the dead-letter copy
                    # failed), before they left `pending`: applied again they
                    # would fail. The copies are finished first (raising
                    # again while the disk is full), so that a reject reads
                    # Archived, as applied_before expects
                    ops.finish_dead_letters(f, self._target(tp, part))
                    for off in ops.applied_before(f, owner, mark):
                        acks.pop(off, None)
                with self._ack_lock:
                    batch, plain = list(acks.values()), key not in mixed
                # (kept when apply_acks raises: an error may come after Q-5
                # step 1 applied the batch)
                self._applying[key] = batch
                bad = ops.apply_acks(f, owner, batch, now, self.record_lock_ms,
                                     self.delivery_limit, self._target(tp, part),
                                     plain) if batch else []
                with self._ack_lock:    # (not those acknowledged meanwhile)
                    for a in batch:
                        if acks.get(a[0]) is a:
                            del acks[a[0]]
                    if not acks:
                        del pending[key]
                        mixed.discard(key)
                del self._applying[key]
            self._touched.add(tp)
            self._failed.extend((tp.topic, tp.partition, off) for off in bad)
        # a release makes records Available; an accept or a reject frees
        # in-flight room (max_in_flight, the ring) that a consumer waiting
        # on a full window needs (a ring nobody waits for is one atomic add)
        self._ring()

    def _ring(self) -> None:
        """Wake share consumers waiting in poll: records are Available again,
        or room to acquire more is."""
        bell = self._log.doorbell_pointer()
        if bell is not None:
            for t in self.topics:
                _native.doorbell_ring_ptr(bell, topic_slot(t))

    def _target(self, tp: TopicPartition, part: Any) -> ops.Target:
        """Where records of ``tp`` this consumer archives go (Q-5)."""
        return ops.Target(tp, part, self._dlq)

    # -- for a caller that waits on its own (pylog.aio) ------------------------------
    def open_files(self) -> None:
        """Open (or make) the share file of every partition of the topics,
        and the dead-letter producer: the file I/O and metadata
        transactions a poll would otherwise do at its first look (pylog.aio
        runs this off the event loop, so that its polls touch memory only)."""
        self._check()
        for tp in self._partitions():
            self._file(tp)
        if self._dlq is not None:
            self._dlq.prepare()

    def kept_back(self) -> list[ss.ShareFile]:
        """The share files of partitions with acknowledgements not applied
        (with ``busy``: kept back by a lock another holds)."""
        keys = list(self._pending)      # (one step: an apply off the loop changes it)
        keys += list(self._gaps)
        return [f for f in (self._files.get(TopicPartition(*k)) for k in keys) if f is not None]

    def apply_pending(self) -> None:
        """Apply the acknowledgements made since, as poll() does first (see
        ``busy``); those refused are raised by the next commit()."""
        self._check()
        self._apply()

    @property
    def closed(self) -> bool:
        """Whether close() was called (or began: it is not tried again)."""
        return self._closed

    # -- life ------------------------------------------------------------------------
    def close(self) -> None:
        """Apply the acknowledgements made, release every record still held
        and not acknowledged (Available again, at once; in implicit mode
        too), and leave. Idempotent."""
        if self._closed:
            return
        self._finalizer.detach()        # (this releases the slots itself)
        if self._log.closed or FORKS[0] != self._forks:
            # the Log's liveness lock went with it: its records are Available
            # to the others at once; in a fork child they are the
            # parent's, left to it
            self._closed = True
            return
        try:
            # (implicit mode too: a record not acknowledged may be one the app
            # never finished — a `with` left by an exception — so it is
            # released, never accepted; commit() first accepts them all)
            self._apply()
            self._held.clear()
            self._unacked.clear()
            for tp, owner in self._owner.items():
                part = self._log.partition(tp.topic, tp.partition)
                f = self._file(tp)
                with f.locked():
                    ops.release_owner(f, owner, self._target(tp, part))
            self._ring()
            if self._dlq is not None:
                self._dlq.close()
            self._log.share_files().release(list(self._files.values()))
        finally:
            self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise LogClosed("the share consumer is closed")
        if FORKS[0] != self._forks:
            # its owner number and held records are the parent's: a child
            # acquiring or releasing under them would hand the parent's
            # records to others while the parent holds them
            raise ForkedLogError("this share consumer was created before os.fork() and "
                                 "belongs to the parent process; create share consumers "
                                 "after forking")
        self._log.check_open()

    def __reduce__(self) -> Any:
        raise not_transferable(self)

    def __enter__(self) -> ShareConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[ShareRecord]:
        """Records one at a time, polling as needed, until close(). In
        implicit mode a record is accepted when the loop asks for the next
        one (unless it was acknowledged); the record in hand when the loop
        is left (break, exception) stays held, and close() releases it."""
        while not self._closed:
            for rec in self.poll(timeout_ms=100):
                yield rec
                if self.implicit and rec[:3] in self._unacked:
                    self.acknowledge(rec, ops.ACCEPT)


def _topic_deleted(c: ShareConsumer, tp: TopicPartition,
                   forget_topic: bool = True) -> None:
    """``tp``'s topic was deleted by another Log (and made again under
    its name): what ``c`` held of it went with it, and its
    share state did (FORMAT.rst Q-3); the next poll reads the new
    topic from its new state. Every partition's: found out through
    one, the deleted topic's state of the others would go on over the
    new topic's records (skipping those below its start offset,
    delivering again those the new state delivers). ``forget_topic``:
    drop the Log's partitions of the topic too (they are the deleted
    topic's)."""
    topic = tp.topic
    gone = [t for t in c._files if t.topic == topic]
    if gone:
        _log.warning("share consumer of group %r: topic %r was deleted while it "
                     "read %s; what it held there is dropped", c.group_id,
                     topic, tp)
    files = [c._files.pop(t) for t in gone]
    # (in place: the finalizer holds _owner and _files)
    maps: tuple[dict[Any, Any], ...] = (c._owner, c._cursors, c._pending,
                                        c._held, c._unacked, c._applying,
                                        c._gaps)
    for d in maps:
        for k in [k for k in d if k[0] == topic]:
            del d[k]
    for keys in (c._touched, c._mixed):
        keys.difference_update([k for k in keys if k[0] == topic])
    for f in files:     # (not one opened since for the topic made again)
        c._log.share_files().forget([f.key], remove=False, only=f)
    if forget_topic:
        c._log.forget_topic(topic)


def _free_abandoned(c: ShareConsumer, f: ss.ShareFile) -> None:
    """Release the records and free the owner slots that collected
    consumers of this process left in ``f`` (locked by ``c``, a consumer
    of the same Log); forget those of closed Logs' files (their slots went
    with their liveness token). Entries of other files go back to the
    queue. (A function, not a method: ShareConsumer stays under 600 lines.)"""
    for _ in range(len(_abandoned)):
        try:
            entry = _abandoned.popleft()
        except IndexError:          # (another thread took the last ones)
            return
        g, tp, n, member = entry
        if g.fd < 0:
            continue
        if g is not f:
            _abandoned.append(entry)
        elif f.owners[2 * n + 1] == member:
            part = c._log.partition(tp.topic, tp.partition)
            ops.release_owner(f, n, c._target(tp, part))


def _abandon(owners: dict[TopicPartition, int], files: dict[TopicPartition, ss.ShareFile],
             member: int) -> None:
    """A share consumer was collected unclosed: queue its owner slots for
    _free_abandoned (a finalizer: no lock taken, no file touched)."""
    for tp, n in owners.items():
        f = files.get(tp)
        if f is not None and f.fd >= 0:
            _abandoned.append((f, tp, n, member))


def _not_acknowledged(unacked: dict[tuple[str, int, int], ShareRecord]) -> InvalidArgument:
    """The error of an explicit-mode poll with records of the last one not
    acknowledged (as Kafka's IllegalStateException)."""
    topic, p, off = next(iter(unacked))
    return InvalidArgument(
        f"explicit acknowledgement mode: {len(unacked)} records of the last poll "
        f"are not acknowledged (first: {topic}-{p} offset {off}); acknowledge "
        "each before polling")


def _runs(got: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The contiguous runs of acquired (offset, count)s (offsets ascend),
    as [start, stop) index ranges of ``got``."""
    if got[-1][0] - got[0][0] == len(got) - 1:     # one run
        return [(0, len(got))]
    runs = []
    i = 0
    while i < len(got):
        j = i
        while j + 1 < len(got) and got[j + 1][0] == got[j][0] + 1:
            j += 1
        runs.append((i, j + 1))
        i = j + 1
    return runs


def _check_args(log: Any, topics: tuple[str, ...], group_id: str,
                acknowledgement_mode: str, auto_offset_reset: str) -> None:
    """InvalidArgument for a bad share consumer argument, ReadOnlyLog,
    TopicNotFound now (not at the first poll)."""
    validate_group_id(group_id)
    if not topics:
        raise InvalidArgument("share_consumer: name at least one topic")
    for t in topics:
        validate_topic_name(t)
    if acknowledgement_mode not in ("explicit", "implicit"):
        raise InvalidArgument(f"acknowledgement_mode={acknowledgement_mode!r}; "
                              "expected 'explicit' or 'implicit'")
    if auto_offset_reset not in ("earliest", "latest"):
        raise InvalidArgument(f"auto_offset_reset={auto_offset_reset!r}; "
                              "expected 'earliest' or 'latest'")
    if log.readonly:
        raise ReadOnlyLog("a share consumer changes share state: open the log "
                          "for writing")
    for t in topics:
        log.partitions_for(t)


def validate_settings(record_lock_ms: object, delivery_limit: object, max_in_flight: object,
                      dead_letter_topic: object) -> None:
    """InvalidArgument for a bad share-group setting (None: unset)."""
    if record_lock_ms is not None:
        _int_in("record_lock_ms", record_lock_ms, 1, ops.RECORD_LOCK_MS_MAX)
    if delivery_limit is not None:
        _int_in("delivery_limit", delivery_limit, 1, 1000)
    if max_in_flight is not None:
        _int_in("max_in_flight", max_in_flight, 1, 1_000_000)
    if dead_letter_topic is not None:
        if not isinstance(dead_letter_topic, str):
            raise InvalidArgument(f"dead_letter_topic={dead_letter_topic!r}; expected str")
        validate_topic_name(dead_letter_topic)


def _int_in(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"{name}={value!r}; expected int in [{lo}, {hi}]")
