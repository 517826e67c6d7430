"""The transaction coordinator: producer ids, transaction documents and the
aborted-transaction index in LMDB (FORMAT.rst X-4 to X-10), as Kafka's
transaction coordinator keeps them in ``__transaction_state``; what
read_committed readers make of them is :mod:`pylog.txnview`.

A transaction's life (the producer side is :mod:`pylog.txnproducer`):

1. ``init`` (the producer is made): the ``transactional_id``'s document
   gets a bumped epoch, which fences any older instance (X-5); what that
   instance left open is aborted (:func:`finish_aborting`).
2. The producer's first send to a partition *arms* it (X-6): the document
   names the partition with its end offset. From there on, a
   transactional batch of the producer id is decided by the control
   batches after it (X-4), so a transaction confined to one partition
   commits with one COMMIT control batch and no LMDB write (X-10).
3. A transaction over several partitions, or with offsets, or an abort,
   decides in one LMDB write transaction (the commit point, X-6): COMMIT
   stores the offsets sent with ``send_offsets_to_transaction`` (M-6,
   C-3); ABORT adds aborted-transaction entries (X-8) and bumps the
   epoch; both move every arm up to its partition's end, so the
   transaction's batches are decided by LMDB. The control batches are
   written after it, for Kafka's readers.

A transaction whose owner process is gone (pid and start time, as group
members are probed), or which held a read_committed reader back longer
than ``transaction_timeout_ms``, is aborted by whoever notices first with
the log writable: the next producer with its ``transactional_id``, or the
reader (:func:`abort_stale`).

Thread safety: every function is one or more LMDB transactions (atomic
across processes) and appends under partitions' append locks; safe from
any thread. Durability: as the log's sync mode makes metadata commits
(M-8) and appends.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import batch, groupstate
from .commitstore import _slot_clear, okey
from .errors import (
    CorruptLogError,
    PartitionNotFound,
    ProducerFencedError,
    TooManyMapsError,
    TooManyOpenFilesError,
    TopicNotFound,
)
from .liveness import HOST, process_start_time

if TYPE_CHECKING:
    from .store import LogStore

# info keys
_TXN = b"txn\0"
_NEXT_PID = b"producer-id"
_ABORTED = b"aborted\0"
_Q = struct.Struct(">q")
_P = struct.Struct(">I")
_ENTRY = struct.Struct(">qq")          # X-8 key tail: first offset, producer id
_EPOCH = struct.Struct(">h")
EPOCH_MAX = 32767                      # int16: a new producer id after it
DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000
TRANSACTION_TIMEOUT_MS_MAX = 3_600_000 * 24

Marker = tuple[str, int]               # (topic, partition) awaiting a control batch


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_OWNER: list[Any] = [None]            # this process's [pid, start time, host]


def _owner() -> list[Any]:
    pid = os.getpid()
    mine = _OWNER[0]
    if mine is None or mine[0] != pid:  # (first use, or a fork child)
        mine = _OWNER[0] = [pid, process_start_time(pid), HOST]
    return list(mine)


def owner_alive(owner: Any) -> bool:
    """Is the process ``[pid, start time, host]`` still there? Owners on
    other hosts are (only the timeout ends their transactions)."""
    if not isinstance(owner, list) or len(owner) != 3:
        return False
    pid, start, host = owner
    if host != HOST:
        return True
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = process_start_time(pid)
    return now != -1 and (now is None or start is None or now == start)


def _doc(meta: Any, txn: Any, tid: str) -> dict[str, Any] | None:
    raw = txn.get(_TXN + tid.encode(), db=meta._info)
    if raw is None:
        return None
    return _parse(meta, tid, raw)


def _parse(meta: Any, tid: str, raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
        assert isinstance(doc["producer_id"], int) and isinstance(doc["epoch"], int)
        assert isinstance(doc["partitions"], list)
        return doc
    except (ValueError, KeyError, TypeError, AssertionError):
        raise CorruptLogError(f"transaction document of {tid!r} is damaged (X-6)",
                              meta.path) from None


def _put(meta: Any, txn: Any, tid: str, doc: dict[str, Any]) -> None:
    txn.put(_TXN + tid.encode(), json.dumps(doc, separators=(",", ":")).encode(),
            db=meta._info)


def _next_pid(meta: Any, txn: Any) -> int:
    """X-7: producer ids are never reused."""
    raw = txn.get(_NEXT_PID, db=meta._info)
    pid = _Q.unpack(raw)[0] if raw is not None else 0
    txn.put(_NEXT_PID, _Q.pack(pid + 1), db=meta._info)
    return pid


def aborted_key(topic: str, partition: int, first: int, pid: int) -> bytes:
    """X-8: the aborted-transaction entry's key."""
    return _ABORTED + topic.encode() + b"\0" + _P.pack(partition) + _ENTRY.pack(first, pid)


def _put_aborted(meta: Any, txn: Any, topic: str, partition: int, first: int,
                 pid: int, epoch: int) -> None:
    """X-8: one aborted-transaction entry (then the collapse below the log
    start)."""
    txn.put(aborted_key(topic, partition, first, pid), _EPOCH.pack(epoch), db=meta._info)
    _collapse_below_start(meta, txn, topic, partition)


def _bump(meta: Any, txn: Any, doc: dict[str, Any]) -> None:
    """The next epoch of ``doc`` (a new producer id after EPOCH_MAX, X-5)."""
    doc["epoch"] += 1
    if doc["epoch"] >= EPOCH_MAX:
        doc["producer_id"], doc["epoch"] = _next_pid(meta, txn), 0


def _entries_in(meta: Any, txn: Any, topic: str,
                partition: int) -> Iterator[tuple[int, int, int]]:
    """X-8: (first offset, producer id, epoch) of a partition's aborted
    entries, by first offset, as LMDB transaction ``txn`` sees them."""
    prefix = _ABORTED + topic.encode() + b"\0" + _P.pack(partition)
    cur = txn.cursor(db=meta._info)
    if cur.set_range(prefix):
        for key, v in cur:
            if not key.startswith(prefix):
                return
            first, pid = _ENTRY.unpack(key[len(prefix):])
            yield first, pid, _EPOCH.unpack(v)[0]


def _collapse_below_start(meta: Any, txn: Any, topic: str, partition: int) -> None:
    """X-8, in an abort's write transaction: of a producer id's entries of
    the partition whose first offset is below its log start offset, keep
    only the one with the highest first offset, with the highest epoch
    among them. The same batches stay covered at and past the log start:
    a first offset is an end offset (a batch boundary), so a batch there
    starts at or past every first offset below the start."""
    start = meta.log_start_in(txn, topic, partition)
    if start <= 0:
        return
    below: dict[int, list[tuple[int, int]]] = {}     # pid -> [(first, epoch)]
    for first, pid, epoch in _entries_in(meta, txn, topic, partition):
        if first >= start:                 # (keys sort by first offset)
            break
        below.setdefault(pid, []).append((first, epoch))
    for pid, runs in below.items():
        if len(runs) < 2:
            continue
        last = max(first for first, _ in runs)
        for first, _ in runs:
            if first != last:
                txn.delete(aborted_key(topic, partition, first, pid), db=meta._info)
        txn.put(aborted_key(topic, partition, last, pid),
                _EPOCH.pack(max(epoch for _, epoch in runs)), db=meta._info)


def _pending_sets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The sets of control batches still to write (X-6 ``markers``)."""
    sets = doc.get("markers")
    if not sets:
        return []
    if isinstance(sets, dict):          # (the single set of the first layout)
        return [dict(sets, producer_id=doc["producer_id"])]
    return list(sets)


def _pending(doc: dict[str, Any], kind: int, markers: list[Marker]) -> None:
    """Add the control batches of a decision to those still to write (X-6
    ``markers``): sets accumulate until the producer wrote them all, so a
    decision whose markers a crash or a failed append left out is never
    dropped by a later one."""
    sets = _pending_sets(doc)
    if markers:
        sets.append({"producer_id": doc["producer_id"], "epoch": doc["epoch"],
                     "type": kind, "partitions": [list(m) for m in markers]})
    doc["markers"] = sets or None


def _todo(doc: dict[str, Any]) -> list[tuple[int, int, int, list[Marker]]]:
    """Every pending set of ``doc`` as (producer id, epoch, type, partitions)."""
    return [(m["producer_id"], m["epoch"], m["type"],
             [(t, p) for t, p in m["partitions"]]) for m in _pending_sets(doc)]


def allocate_producer_id(log: LogStore) -> int:
    """A new producer id for an idempotent producer (epoch 0)."""
    with log.meta._txn("allocate a producer id", write=True) as txn:
        return _next_pid(log.meta, txn)


class Init:
    """What :func:`init` and :func:`end` hand the producer: its producer id
    and epoch from now on, the control batches to write, and its arms."""

    __slots__ = ("producer_id", "epoch", "markers", "arms", "committed_before")

    def __init__(self, producer_id: int, epoch: int,
                 markers: list[tuple[int, int, int, list[Marker]]],
                 arms: list[list[Any]], committed_before: bool = False):
        self.producer_id = producer_id
        self.epoch = epoch
        # (producer id, epoch, type, partitions) of control batches to write
        self.markers = markers
        self.arms = arms            # [[topic, partition, first], ...]
        # end(): the transaction was decided COMMIT by an earlier call
        self.committed_before = committed_before


def _arms(doc: dict[str, Any]) -> list[list[Any]]:
    return [list(a) for a in doc["partitions"]]


def init(log: LogStore, tid: str, timeout_ms: int) -> Init:
    """X-5: make this process the owner of ``tid`` with a new epoch (or a new
    producer id once the epoch is exhausted); what an older instance left
    open is named for :func:`finish_aborting` (X-9), which the caller runs
    once it wrote the control batches returned (decided before: they go
    first)."""
    meta = log.meta
    with meta._txn(f"init transactional id {tid!r}", write=True) as txn:
        doc = _doc(meta, txn, tid)
        if doc is None:
            doc = {"producer_id": _next_pid(meta, txn), "epoch": 0, "partitions": [],
                   "markers": None}
        else:
            _start_aborting(meta, txn, doc)
        # every set still named stays until this instance wrote them
        todo = _todo(doc)
        doc.update(state="ready", owner=_owner(), timeout_ms=timeout_ms, deadline_ms=None)
        _put(meta, txn, tid, doc)
    return Init(doc["producer_id"], doc["epoch"], todo, [])


def _start_aborting(meta: Any, txn: Any, doc: dict[str, Any]) -> None:
    """X-9, in a write transaction: move the arms of ``doc`` (its producer
    id and epoch may have a transaction open in them) to its ``aborting``
    sets and bump the epoch, which fences the instance that ran it;
    :func:`finish_aborting` then decides them."""
    if doc["partitions"]:
        sets = list(doc.get("aborting") or [])
        sets.append({"producer_id": doc["producer_id"], "epoch": doc["epoch"],
                     "partitions": doc["partitions"]})
        doc["aborting"] = sets
    doc["partitions"] = []
    _bump(meta, txn, doc)


def finish_aborting(log: LogStore, tid: str) -> bool:
    """X-9: decide the transactions named by ``tid``'s ``aborting`` sets. In
    each partition named, under its append lock: find where the open
    transaction of (producer id, epoch) begins (after the last COMMIT of
    that epoch at or past the arm) and append an ABORT control batch of
    the next epoch, which refuses any later COMMIT of that epoch (X-5);
    then write the X-8 entries and drop the sets, in one write
    transaction. The control batches the document still names go first.
    Returns whether there was anything to finish (then those control
    batches were written). Every step may be repeated (a finisher that died leaves
    the sets for the next one, which finds the same beginnings)."""
    meta = log.meta
    with meta._txn(f"read transactional id {tid!r}") as txn:
        doc = _doc(meta, txn, tid)
    sets = (doc or {}).get("aborting")
    if not doc or not sets:
        return False
    named = doc.get("markers")
    for pid, epoch, kind, parts in _todo(doc):
        # the control batches of decisions made before go first: after the
        # fence, a marker of an older epoch is refused
        try:
            write_markers(log, pid, epoch, kind, parts)
        except ProducerFencedError:
            pass               # (a newer epoch came there: this one is moot)
    entries = []
    for s in sets:
        pid, epoch = s["producer_id"], s["epoch"]
        for topic, p, first in s["partitions"]:
            try:
                part = log.partition(topic, p)
            except (TopicNotFound, PartitionNotFound):
                continue
            assert part.writer is not None        # (a writable log)
            begin = part.writer.fence_producer(pid, epoch, first)
            entries.append((topic, p, begin, pid, epoch))
    with meta._txn(f"abort the transaction of {tid!r}", write=True) as txn:
        doc = _doc(meta, txn, tid)
        if doc is None or doc.get("aborting") != sets:
            return True                # another finisher wrote the same
        for topic, p, begin, pid, epoch in entries:
            _put_aborted(meta, txn, topic, p, begin, pid, epoch)
        doc["aborting"] = None
        if doc.get("markers") == named:
            doc["markers"] = None        # (written above)
        _put(meta, txn, tid, doc)
    return True


def _check_owner(tid: str, doc: dict[str, Any] | None, pid: int, epoch: int) -> dict[str, Any]:
    if doc is None or doc["producer_id"] != pid or doc["epoch"] != epoch:
        now = "gone" if doc is None else \
            f"producer id {doc['producer_id']} epoch {doc['epoch']}"
        raise ProducerFencedError(
            f"transactional id {tid!r}: this producer (id {pid}, epoch {epoch}) was "
            f"fenced; the id now belongs to {now} (a newer producer was made, or "
            "this one's transaction was aborted after its owner seemed dead or "
            "its transaction_timeout_ms passed); close this producer")
    return doc


def register(log: LogStore, tid: str, pid: int, epoch: int, topic: str,
             partition: int, first: int, written: bool) -> None:
    """X-6: arm a partition for ``tid``'s producer, with ``first`` (the
    partition's end offset, read before this call, before the producer's
    first append there). ``written``: the producer wrote every set of
    control batches named so far (they are dropped). Raises
    ProducerFencedError."""
    meta = log.meta
    with meta._txn(f"add {topic}-{partition} to transaction {tid!r}", write=True) as txn:
        doc = _check_owner(tid, _doc(meta, txn, tid), pid, epoch)
        if written:
            doc["markers"] = None
        for arm in doc["partitions"]:
            if arm[0] == topic and arm[1] == partition:
                # (a re-created topic: any lower bound will do)
                arm[2] = min(arm[2], first)
                break
        else:
            doc["partitions"].append([topic, partition, first])
        doc["owner"] = _owner()
        _put(meta, txn, tid, doc)


def markers_written(log: LogStore, tid: str, pid: int, epoch: int) -> None:
    """X-6: the producer wrote every set of control batches the document
    names: drop them, before the producer's next batch (a set written
    again after that batch would read as its decision, X-4). Raises
    ProducerFencedError."""
    meta = log.meta
    with meta._txn(f"control batches of {tid!r} written", write=True) as txn:
        doc = _check_owner(tid, _doc(meta, txn, tid), pid, epoch)
        doc["markers"] = None
        _put(meta, txn, tid, doc)


def _ends(log: LogStore, tid: str) -> dict[tuple[str, int], int]:
    """The end offsets of the partitions ``tid`` arms, read now (those of
    deleted topics left out)."""
    meta = log.meta
    with meta._txn(f"read transactional id {tid!r}") as txn:
        doc = _doc(meta, txn, tid)
    ends = {}
    for topic, p, _ in (doc or {}).get("partitions", ()):
        try:
            ends[(topic, p)] = log.partition(topic, p).state().next_offset
        except (TopicNotFound, PartitionNotFound, TooManyMapsError, TooManyOpenFilesError):
            pass                # (that arm keeps its bound: any lower one will do)
    return ends


def _rearm(doc: dict[str, Any], ends: Mapping[tuple[str, int], int]) -> None:
    """Move every arm up to its partition's end (read before the write
    transaction and after the producer's last append): every batch of
    the producer below it is decided. An arm the read missed keeps its
    bound."""
    doc["partitions"] = [[t, p, max(first, ends.get((t, p), first))]
                         for t, p, first in doc["partitions"]]


def end(log: LogStore, tid: str, pid: int, epoch: int, commit: bool,
        parts: list[Marker], firsts: Mapping[Marker, int],
        offsets: Mapping[str, Mapping[tuple[str, int], int]],
        members: Mapping[str, str] | None = None, written: bool = True,
        number: int = -1) -> Init:
    """The commit point of a transaction decided in LMDB: one write
    transaction. ``parts``: the transaction's partitions (they get the
    control batches); ``firsts``: {partition: offset of the transaction's
    first batch there}. COMMIT also stores ``offsets`` ({group: {(topic,
    partition): offset}}, M-6), each group's only if its member in
    ``members`` ({group: member id}) still owns every partition named
    (else CommitFailedError, nothing stored: Kafka's group metadata check);
    ABORT writes X-8 entries at ``firsts`` and bumps the epoch. Either way
    the arms move up to the partitions' ends. ``written`` as
    :func:`register`. ``number``: the producer's number of the transaction;
    once a COMMIT of it is stored, a later end() of it (its producer was
    interrupted past the commit point, then aborted or committed again)
    changes nothing and returns with ``committed_before`` set, as Kafka's
    coordinator keeps a decided transaction's outcome. Returns the
    producer id and epoch from now on, the control batches to write and
    the arms. Raises ProducerFencedError (nothing stored)."""
    meta = log.meta
    after: list[Any] = []
    now = _now_ms()
    ends = _ends(log, tid)
    with meta._txn(f"{'commit' if commit else 'abort'} transaction {tid!r}", write=True,
                   after=after) as txn:
        doc = _check_owner(tid, _doc(meta, txn, tid), pid, epoch)
        decided = [pid, epoch, number]
        if number >= 0 and doc.get("committed") == decided:
            return Init(pid, epoch, _todo(doc), _arms(doc), committed_before=True)
        if written:
            doc["markers"] = None
        if commit:
            doc["committed"] = decided
            for group, offs in offsets.items():
                if offs:
                    state = meta._group_in(txn, group)
                    if members and group in members:
                        groupstate.fence(state, group, members[group], offs)
                    _release_slots(meta, txn, group, offs)
                    owners = state.owners
                    meta.store_offsets(txn, group, dict(offs), now, owners, after)
            kind = batch.COMMIT
        else:
            for (topic, p), first in firsts.items():
                _put_aborted(meta, txn, topic, p, first, pid, epoch)
            doc["epoch"] += 1            # (the ABORT markers carry the bumped one)
            kind = batch.ABORT
        _pending(doc, kind, list(parts))
        todo = _todo(doc)            # (with any an earlier write left out)
        _rearm(doc, ends)
        if doc["epoch"] >= EPOCH_MAX:
            # (the markers keep the id and epoch they were decided under)
            doc["producer_id"], doc["epoch"] = _next_pid(meta, txn), 0
        doc["state"] = "ready"
        doc["deadline_ms"] = None
        _put(meta, txn, tid, doc)
    return Init(doc["producer_id"], doc["epoch"], todo, _arms(doc))


def rearm(log: LogStore, tid: str, pid: int, epoch: int) -> list[list[Any]]:
    """Move ``tid``'s arms up to their partitions' ends with no open
    transaction (after a commit of X-10), so that the walks of readers and
    aborters start near the end; returns the arms. Raises
    ProducerFencedError."""
    meta = log.meta
    ends = _ends(log, tid)
    with meta._txn(f"re-arm transactional id {tid!r}", write=True) as txn:
        doc = _check_owner(tid, _doc(meta, txn, tid), pid, epoch)
        _rearm(doc, ends)
        _put(meta, txn, tid, doc)
    return _arms(doc)


def _release_slots(meta: Any, txn: Any, group: str,
                   offsets: Mapping[tuple[str, int], int]) -> None:
    """X-6, before the commit point: clear the commit-table slots (C-2) of
    the offsets it stores, so that until the slots get the new values
    (after the commit, C-3) a reader takes the offset from LMDB, waiting
    for this transaction (C-3: a cleared slot is claimed from LMDB in a
    write transaction). Without it, a process killed between the commit
    point and the slot stores leaves the old offsets in the slots, and the
    next consumer of the group processes the transaction's inputs again."""
    table = meta.cursors
    if table is None:
        return
    for topic, p in offsets:
        k = okey(group, topic, p)
        slot = meta._slot_in(txn, k, create=False)
        if slot is not None:
            table.by_okey.pop(k, None)
            _slot_clear(table, slot)()


def write_markers(log: LogStore, pid: int, epoch: int, kind: int,
                  partitions: list[Marker]) -> None:
    """X-2: append a COMMIT or ABORT control batch to each partition (not
    made durable here: the decision is in LMDB). A deleted topic is
    skipped."""
    key, value = batch.control_record(kind)
    fields = batch.ProducerFields(pid, epoch, -1,
                                  batch.TRANSACTIONAL_MASK | batch.CONTROL_MASK)
    for topic, p in partitions:
        try:
            part = log.partition(topic, p)
        except TopicNotFound:
            continue
        assert part.writer is not None       # (a writable log)
        # (checked and appended in one hold of the append lock: a marker of
        # an epoch the partition has seen pass is refused, never written
        # after the newer epoch's batches, X-5)
        part.writer.append_producer([(_now_ms(), key, value, ())], fields, sync=False)


def abort_stale(log: LogStore, stale: Mapping[str, tuple[int, int]]) -> int:
    """X-9: abort the open transactions a read_committed reader found held
    back by a gone owner or for longer than their timeout: {transactional
    id: (producer id, epoch) as the reader saw them} (a document changed
    since is left to its new state). The owner, if alive, is fenced.
    Returns how many ids were handled."""
    meta = log.meta
    for tid, (pid, epoch) in stale.items():
        with meta._txn(f"abort the stale transaction of {tid!r}", write=True) as txn:
            doc = _doc(meta, txn, tid)
            if doc is not None and (doc["producer_id"], doc["epoch"]) == (pid, epoch) \
                    and doc["partitions"]:
                _start_aborting(meta, txn, doc)
                _put(meta, txn, tid, doc)
        finish_aborting(log, tid)
    return len(stale)
