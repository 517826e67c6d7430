"""The transaction coordinator: producer ids, transaction documents, the
aborted-transaction index and the last stable offset, in LMDB (FORMAT.rst
X-5 to X-9), as Kafka's transaction coordinator keeps them in
``__transaction_state``.

A transaction's life (the producer side is :mod:`pylog.txnproducer`):

1. ``init`` (the producer is made): the ``transactional_id``'s document
   gets a bumped epoch, which fences any older instance (X-5); an open
   transaction that instance left is aborted.
2. The first send to a partition registers it in the document with the
   partition's end offset, a lower bound of the transaction's first offset
   there (X-6) — before any record goes in, so whoever aborts the
   transaction knows where to. read_committed readers stop there (X-4).
3. ``end``: one write transaction decides. COMMIT stores the offsets sent
   with ``send_offsets_to_transaction`` (M-6, C-3) in the same commit;
   ABORT adds an aborted-transaction entry per partition (X-8) and bumps
   the epoch. Either way the partitions leave the document: that commit is
   the commit point. The COMMIT / ABORT control batches (X-2) are written
   after, for Kafka's readers; pylog's readers decide from LMDB alone, so a
   crash between the two loses nothing (the markers a crash left out are
   written by the next instance, X-6 ``markers``).

A transaction whose owner process is gone (pid and start time, as group
members are probed) or whose ``transaction_timeout_ms`` passed is aborted
by whoever notices first with the log writable: the next producer with its
``transactional_id``, or a read_committed consumer whose partition it holds
back (:func:`abort_stale`).

Thread safety: every function is one or more LMDB transactions (atomic
across processes); safe from any thread. Durability: as the log's sync
mode makes metadata commits (M-8).
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
from .errors import CorruptLogError, ProducerFencedError, TopicNotFound
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


def _abort_in(meta: Any, txn: Any, doc: dict[str, Any]) -> list[Marker]:
    """In a write transaction: abort ``doc``'s open transaction (X-8 entries
    for the epoch it ran under, the epoch bumped); returns the partitions
    that need an ABORT marker."""
    epoch = doc["epoch"]
    markers = []
    for topic, p, first in doc["partitions"]:
        txn.put(aborted_key(topic, p, first, doc["producer_id"]), _EPOCH.pack(epoch),
                db=meta._info)
        _collapse_below_start(meta, txn, topic, p)
        markers.append((topic, p))
    doc["epoch"] = epoch + 1
    doc["partitions"] = []
    doc["state"] = "ready"
    return markers


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
    and epoch from now on, and the control batches to write."""

    __slots__ = ("producer_id", "epoch", "markers")

    def __init__(self, producer_id: int, epoch: int, markers: list[tuple[int, int, int,
                                                                         list[Marker]]]):
        self.producer_id = producer_id
        self.epoch = epoch
        # (producer id, epoch, type, partitions) of control batches to write
        self.markers = markers


def init(log: LogStore, tid: str, timeout_ms: int) -> Init:
    """X-5: make this process the owner of ``tid`` with a new epoch (or a new
    producer id once the epoch is exhausted), aborting what an older
    instance left open."""
    meta = log.meta
    with meta._txn(f"init transactional id {tid!r}", write=True) as txn:
        doc = _doc(meta, txn, tid)
        if doc is None:
            doc = {"producer_id": _next_pid(meta, txn), "epoch": 0, "partitions": [],
                   "markers": None}
        else:
            _pending(doc, batch.ABORT, _abort_in(meta, txn, doc))
            if doc["epoch"] >= EPOCH_MAX:
                doc["producer_id"], doc["epoch"] = _next_pid(meta, txn), 0
        # every set still named stays until this instance wrote them
        todo = _todo(doc)
        doc.update(state="ready", owner=_owner(), timeout_ms=timeout_ms, deadline_ms=None)
        _put(meta, txn, tid, doc)
    return Init(doc["producer_id"], doc["epoch"], todo)


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
             partition: int, first: int) -> None:
    """X-6: add a partition to ``tid``'s open transaction (opening it), with
    ``first`` (the partition's end offset, read before this call) as the
    bound of its first offset there. Opening it clears the pending control
    batches: the caller wrote every set :func:`init` and :func:`end`
    returned it before. Raises ProducerFencedError."""
    meta = log.meta
    with meta._txn(f"add {topic}-{partition} to transaction {tid!r}", write=True) as txn:
        doc = _check_owner(tid, _doc(meta, txn, tid), pid, epoch)
        if doc.get("state") != "ongoing":
            doc["state"] = "ongoing"
            doc["partitions"] = []
            doc["deadline_ms"] = _now_ms() + doc["timeout_ms"]
            doc["owner"] = _owner()
            # (the caller wrote them all: see the docstring)
            doc["markers"] = None
        doc["partitions"].append([topic, partition, first])
        _put(meta, txn, tid, doc)


def end(log: LogStore, tid: str, pid: int, epoch: int, commit: bool,
        offsets: Mapping[str, Mapping[tuple[str, int], int]],
        members: Mapping[str, str] | None = None) -> Init:
    """The commit point: decide ``tid``'s open transaction in one write
    transaction. COMMIT also stores ``offsets`` ({group: {(topic,
    partition): offset}}, M-6), each group's only if its member in
    ``members`` ({group: member id}) still owns every partition named
    (else CommitFailedError, nothing stored: Kafka's group metadata check);
    ABORT writes X-8 entries and bumps the epoch. Returns the producer id
    and epoch from now on and the control batches to write. Raises
    ProducerFencedError (nothing stored)."""
    meta = log.meta
    after: list[Any] = []
    now = _now_ms()
    with meta._txn(f"{'commit' if commit else 'abort'} transaction {tid!r}", write=True,
                   after=after) as txn:
        doc = _check_owner(tid, _doc(meta, txn, tid), pid, epoch)
        if commit:
            markers: list[Marker] = [(t, p) for t, p, _ in doc["partitions"]]
            for group, offs in offsets.items():
                if offs:
                    state = meta._group_in(txn, group)
                    if members and group in members:
                        groupstate.fence(state, group, members[group], offs)
                    _release_slots(meta, txn, group, offs)
                    owners = state.owners
                    meta.store_offsets(txn, group, dict(offs), now, owners, after)
            doc["partitions"] = []
            doc["state"] = "ready"
            kind = batch.COMMIT
        else:
            markers = _abort_in(meta, txn, doc)      # (the epoch after it)
            kind = batch.ABORT
        _pending(doc, kind, markers)
        todo = _todo(doc)            # (with any an earlier write left out)
        if doc["epoch"] >= EPOCH_MAX:
            # (the markers keep the id and epoch they were decided under)
            doc["producer_id"], doc["epoch"] = _next_pid(meta, txn), 0
        doc["deadline_ms"] = None
        _put(meta, txn, tid, doc)
    return Init(doc["producer_id"], doc["epoch"], todo)


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


def _stale(doc: dict[str, Any], now: int) -> bool:
    if doc.get("state") != "ongoing":
        return False
    deadline = doc.get("deadline_ms")
    return (deadline is not None and now > deadline) or not owner_alive(doc.get("owner"))


def abort_stale(log: LogStore) -> int:
    """Abort every open transaction whose owner died or whose timeout
    passed (the owner, if alive, is fenced: X-5); returns how many."""
    meta = log.meta
    now = _now_ms()
    todo = []
    with meta._txn("abort stale transactions", write=True) as txn:
        for tid, doc in _docs(meta, txn):
            if _stale(doc, now):
                markers = _abort_in(meta, txn, doc)
                _pending(doc, batch.ABORT, markers)
                doc["deadline_ms"] = None
                _put(meta, txn, tid, doc)
                todo.append((doc["producer_id"], doc["epoch"], markers))
    # (only this abort's: the sets named before are the next instance's, X-5)
    for pid, epoch, markers in todo:
        write_markers(log, pid, epoch, batch.ABORT, markers)
    return len(todo)


def _docs(meta: Any, txn: Any) -> list[tuple[str, dict[str, Any]]]:
    out = []
    cur = txn.cursor(db=meta._info)
    if cur.set_range(_TXN):
        for k, _ in cur:
            if not k.startswith(_TXN):
                break
            tid = k[len(_TXN):].decode()
            doc = _doc(meta, txn, tid)
            assert doc is not None
            out.append((tid, doc))
    return out


class TxnView:
    """A read_committed reader's look at the transactions during one poll:
    the last stable offset of a partition (X-4) and its aborted ranges
    (X-8). ``stale``: an open transaction it saw should be aborted (X-9).

    The reader must read a partition's end before asking for its last
    stable offset, which reads LMDB then: a transactional batch below that
    end was appended after its partition's registration committed, so the
    registration (or the decision that removed it, with its X-8 entries)
    is seen."""

    def __init__(self, log: LogStore) -> None:
        self._log = log
        now = _now_ms()
        self.stale = any(_stale(doc, now) for doc in self._open_docs())
        self._aborted: dict[tuple[str, int], dict[int, list[tuple[int, int]]]] = {}
        self._starts: dict[tuple[str, int], int] = {}      # M-5, read with them

    def _open_docs(self) -> list[dict[str, Any]]:
        meta = self._log.meta
        with meta._txn("read transactions") as txn:
            return [doc for _tid, doc in _docs(meta, txn) if doc.get("state") == "ongoing"]

    def last_stable(self, topic: str, partition: int, end: int) -> int:
        """X-4: the offset read_committed reads of a partition whose end
        offset was just read as ``end`` stop at."""
        lso = end
        for doc in self._open_docs():
            for t, p, first in doc["partitions"]:
                if t == topic and p == partition and first < lso:
                    lso = first
        self._aborted.pop((topic, partition), None)    # read after this
        return lso

    def _entries(self, topic: str, partition: int) -> dict[int, list[tuple[int, int]]]:
        k = (topic, partition)
        got = self._aborted.get(k)
        if got is None:
            got = self._aborted[k] = {}
            meta = self._log.meta
            with meta._txn("read aborted transactions") as txn:
                # (with the entries: the start they were collapsed below)
                self._starts[k] = meta.log_start_in(txn, topic, partition)
                for first, pid, epoch in _entries_in(meta, txn, topic, partition):
                    got.setdefault(pid, []).append((first, epoch))
        return got

    def aborted(self, topic: str, partition: int, header: Any) -> bool:
        """X-8: is the transactional batch ``header`` of an aborted
        transaction? It is when an entry of its producer id starts at or
        before it with the batch's epoch or a later one."""
        runs = self._entries(topic, partition).get(header.producer_id)
        if header.base_offset < self._starts[(topic, partition)]:
            # below the log start its entries may have been collapsed
            # after this fetch began; the batch is deleted anyway
            return True
        if not runs:
            return False
        return any(first <= header.base_offset and epoch >= header.producer_epoch
                   for first, epoch in runs)
