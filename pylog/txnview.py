"""What a read_committed reader reads of the transactions (FORMAT.rst X-4,
X-6, X-8, X-9): :class:`TxnView`, one poll's look at the transaction
documents, arms and aborted-transaction entries in LMDB, and the
decision of each transactional batch by the control batches after it;
:class:`ReadMemory`, what a consumer keeps of it from one poll to the
next. The LMDB layout and the producer side are
:mod:`pylog.transactions`'; the walks over the batches are
:mod:`pylog.txnreads`'.

Thread safety: a TxnView is one fetch's, a ReadMemory one consumer's
(its fetches never overlap). Durability: nothing here writes; a stale
transaction found is aborted by the caller (:func:`pylog.transactions.
abort_stale`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any

from . import batch
from .transactions import (
    _TXN,
    DEFAULT_TRANSACTION_TIMEOUT_MS,
    _entries_in,
    _parse,
    owner_alive,
)

if TYPE_CHECKING:
    from .store import LogStore


def _docs(meta: Any, txn: Any, memory: ReadMemory) -> list[tuple[str, dict[str, Any]]]:
    """(transactional id, document) of every id, in ``txn``. A document
    whose stored bytes are those ``memory`` holds is not parsed again
    (the parsed documents are shared: their readers never change them);
    when any changed, ``memory``'s derived maps are dropped."""
    snapshot = txn.id()
    if snapshot == memory.snapshot and memory.listed is not None:
        return memory.listed        # (no write since: the same documents)
    out = []
    known = memory.docs
    changed = False
    cur = txn.cursor(db=meta._info)
    if cur.set_range(_TXN):
        for k, raw in cur:
            if not k.startswith(_TXN):
                break
            tid = k[len(_TXN):].decode()
            had = known.get(tid)
            if had is not None and had[0] == raw:
                doc = had[1]
            else:
                doc = _parse(meta, tid, raw)
                known[tid] = (raw, doc)
                changed = True
            out.append((tid, doc))
    if len(known) > len(out):
        now = {tid for tid, _ in out}
        for tid in [t for t in known if t not in now]:
            del known[tid]
        changed = True
    if changed or memory.owners is None:
        owners: dict[int, tuple[str, dict[str, Any]]] = {}
        for tid, doc in out:
            owners[doc["producer_id"]] = (tid, doc)
            for s in doc.get("aborting") or ():
                owners[s["producer_id"]] = (tid, doc)
        memory.owners = owners
        memory.arms.clear()
    memory.snapshot, memory.listed = snapshot, out
    return out


COMMITTED, ABORTED, OPEN = batch.TXN_COMMITTED, batch.TXN_ABORTED, batch.TXN_OPEN
# (offset, producer id, epoch, type) of a control batch a walk passed
Control = tuple[int, int, int, int]
#: what a consumer keeps of the batch a partition is held back at
#: (ReadMemory.held): its key, when first found (the X-9 timeout starts
#: there), where the walk after it ended, the control batches it passed
Held = tuple[tuple[int, ...], float, tuple[int, int], tuple[Control, ...]]


def _verdict(controls: deque[Control], header: Any, skip: int = 0) -> int | None:
    """X-4: the decision the first deciding control batch after
    ``header`` makes (batch.txn_decision); None: undecided by these.
    The first ``skip`` controls are known not to decide it."""
    pid, epoch, base = header.producer_id, header.producer_epoch, header.base_offset
    for off, cpid, cepoch, kind in islice(controls, skip, None):
        if cpid == pid and off > base:
            got = batch.txn_decision(epoch, cepoch, kind)
            if got is not None:
                return got
    return None


def _arms_of(docs: list[tuple[str, dict[str, Any]]], topic: str, partition: int
             ) -> dict[int, int]:
    """X-6: {producer id: first offset} of the arms ``docs`` hold in the
    partition (an aborting set's too)."""
    arms: dict[int, int] = {}
    for _, doc in docs:
        sets = [(doc["producer_id"], doc["partitions"])]
        sets += [(s["producer_id"], s["partitions"]) for s in doc.get("aborting") or ()]
        for pid, parts in sets:
            for t, p, first in parts:
                if t == topic and p == partition:
                    arms[pid] = min(first, arms.get(pid, first))
    return arms


class _Seen:
    """What a view read of one partition, in one LMDB read transaction
    (arms, X-8 entries and the log start agree), and its walk."""

    __slots__ = ("arms", "entries", "start", "controls", "walk", "walk_from", "done")

    def __init__(self, arms: dict[int, int], entries: dict[int, list[tuple[int, int]]],
                 start: int) -> None:
        self.arms = arms                  # producer id -> first
        self.entries = entries            # producer id -> [(first, epoch)]
        self.start = start                # the log start (M-5)
        self.controls: deque[Control] = deque()
        self.walk: Any = None             # (segment base, position) the walk resumes at
        self.done = False                 # whether that is the end the reader read
        self.walk_from = -1               # offset of the batch it began after


class ReadMemory:
    """What a read_committed consumer keeps from one poll to the next
    (X-4, X-9). ``held``: per partition held back, the batch it is held
    at, {(topic, partition): ((producer id, epoch, base offset, crc),
    when first found, where the walk after it ended, the control batches
    the walk passed)}: the next poll walks on from there, not over the
    whole tail again (one entry per partition: as many as it owns).
    ``docs``: the transaction documents last read, {id: (stored bytes,
    document)}: a poll parses only those that changed, finds the arms
    anew only when one did, and lists none when LMDB had no write since
    the last.

    Thread safety: none; one per consumer, whose fetches never overlap."""

    __slots__ = ("held", "docs", "owners", "arms", "snapshot", "listed")

    def __init__(self) -> None:
        self.held: dict[tuple[str, int], Held] = {}
        self.docs: dict[str, tuple[bytes, dict[str, Any]]] = {}
        # derived from ``docs`` (dropped when one changes): {producer id:
        # (transactional id, document)}; {(topic, partition): its arms}
        self.owners: dict[int, tuple[str, dict[str, Any]]] | None = None
        self.arms: dict[tuple[str, int], dict[int, int]] = {}
        # the LMDB snapshot (its last write transaction's id) the list of
        # (id, document) was read in: a read of the same one lists none again
        self.snapshot = -1
        self.listed: list[tuple[str, dict[str, Any]]] | None = None


class TxnView:
    """A read_committed reader's look at the transactions during one poll
    (X-4, X-8, X-9). ``stale``: {transactional id: (producer id, epoch)}
    of the transactions it found held back by a gone owner or past their
    timeout (:func:`abort_stale`). ``memory``: what the consumer keeps
    across polls (:class:`ReadMemory`). ``walk_budget``: how many batches
    the walks of this view may pass in all (an event loop's fetch: about
    3 µs each); past it a batch not decided yet counts as open for this
    poll, ``unfinished`` is set, and the next poll walks on from there.

    A partition's documents and entries are read at its first decision,
    after the reader read the partition's end: a transactional batch below
    that end was appended after its partition was armed, so the arm (or
    the decision that moved it, with its X-8 entries) is seen."""

    def __init__(self, log: LogStore, memory: ReadMemory | None = None,
                 walk_budget: int | None = None) -> None:
        self._log = log
        self._budget = walk_budget
        self.unfinished = False
        self._seen: dict[tuple[str, int], _Seen] = {}
        self._owners: dict[int, tuple[str, dict[str, Any]]] = {}
        self._memory = memory = memory if memory is not None else ReadMemory()
        self._held = memory.held
        self.stale: dict[str, tuple[int, int]] = {}

    def _load(self, topic: str, partition: int) -> _Seen:
        k = (topic, partition)
        got = self._seen.get(k)
        if got is None:
            meta = self._log.meta
            memory = self._memory
            entries: dict[int, list[tuple[int, int]]] = {}
            with meta._txn("read transactions") as txn:
                docs = _docs(meta, txn, memory)
                assert memory.owners is not None
                self._owners = memory.owners
                arms = memory.arms.get(k)
                if arms is None:
                    arms = memory.arms[k] = _arms_of(docs, topic, partition)
                # (with the entries: the start they were collapsed below)
                start = meta.log_start_in(txn, topic, partition)
                for first, pid, epoch in _entries_in(meta, txn, topic, partition):
                    entries.setdefault(pid, []).append((first, epoch))
            got = self._seen[k] = _Seen(arms, entries, start)
        return got

    def read_documents(self) -> None:
        """Read and parse every transactional id's document into the
        view's memory, ahead of the fetches that need them."""
        meta = self._log.meta
        with meta._txn("read transactions") as txn:
            _docs(meta, txn, self._memory)

    def aborted(self, topic: str, partition: int, header: Any) -> bool:
        """X-8: is the transactional batch ``header`` of an aborted
        transaction by the index? It is when an entry of its producer id
        starts at or before it with the batch's epoch or a later one."""
        seen = self._load(topic, partition)
        if header.base_offset < seen.start:
            # below the log start its entries may have been collapsed
            # after this fetch began; the batch is deleted anyway
            return True
        runs = seen.entries.get(header.producer_id)
        if not runs:
            return False
        return any(first <= header.base_offset and epoch >= header.producer_epoch
                   for first, epoch in runs)

    def arms(self, topic: str, partition: int) -> dict[int, int]:
        """The arms of the partition (X-6): {producer id: first offset}."""
        return self._load(topic, partition).arms

    def decide(self, topic: str, partition: int, header: Any, after: Any,
               more: Callable[[Any, deque[Control], int, int | None], Any]) -> int:
        """X-4: COMMITTED, ABORTED or OPEN for the transactional batch
        ``header``. ``after``: where the reader's walk of the batches after
        it begins; ``more(at, controls, pid, limit)`` walks on from ``at``,
        appending the control batches it passes to ``controls``, up to and
        with the next one of producer id ``pid`` or ``limit`` batches
        (None: no limit), and returns (where it stopped, whether that is
        the partition's end as the reader read it, batches passed)."""
        if self.aborted(topic, partition, header):
            return ABORTED
        seen = self._load(topic, partition)
        first = seen.arms.get(header.producer_id)
        if first is None or header.base_offset < first:
            return COMMITTED           # decided in LMDB
        part_key = (topic, partition)
        key = (header.producer_id, header.producer_epoch, header.base_offset, header.crc)
        was = self._held.get(part_key)
        if was is not None and was[0] != key:
            was = None              # (another batch's: this one was never held)
        if header.base_offset < seen.walk_from or seen.walk_from < 0:
            seen.controls.clear()
            seen.walk, seen.walk_from, seen.done = after, header.base_offset, False
            if was is not None:
                # held back at an earlier poll: no batch up to where that
                # poll's walk ended decided it, and those bytes never
                # change (append-only), so the walk goes on from there,
                # with the control batches it had passed (later batches
                # are decided by them), instead of going over the whole
                # tail again
                seen.walk = was[2]
                seen.controls.extend(was[3])
        controls = seen.controls
        while controls and controls[0][0] <= header.base_offset:
            controls.popleft()
        # those an earlier poll passed did not decide the batch then: a
        # poll held back at a hung transaction looks at new ones only
        checked = len(was[3]) if was is not None and seen.walk == was[2] else 0
        while True:
            got = _verdict(controls, header, checked)
            checked = len(controls)
            if got is not None:
                if was is not None:
                    del self._held[part_key]
                break
            if seen.done:
                self._held_back(part_key, key, header, seen)
                got = OPEN
                break
            if self._budget is not None and self._budget <= 0:
                # undecided yet, so never stale: its COMMIT may lie
                # further on
                self._walked(part_key, key, seen)
                self.unfinished = True
                got = OPEN
                break
            seen.walk, seen.done, n = more(seen.walk, controls, header.producer_id,
                                           self._budget)
            if self._budget is not None:
                self._budget -= n
        return got

    def _walked(self, part_key: tuple[str, int], key: tuple[int, ...], seen: _Seen
                ) -> float:
        """Note, for the partition, the batch ``key`` names as the one it
        is held at, where the walk after it ended and the control batches
        it passed; returns when the batch was first held back (now for a
        first time)."""
        was = self._held.get(part_key)
        if was is None or was[0] != key:
            since = time.monotonic()
        elif was[2] == seen.walk:
            # nothing walked since: the controls are those noted (a poll
            # held back at a hung transaction copies none of them again)
            return float(was[1])
        else:
            since = was[1]
        self._held[part_key] = (key, since, seen.walk, tuple(seen.controls))
        return since

    def _held_back(self, part_key: tuple[str, int], key: tuple[int, ...], header: Any,
                   seen: _Seen) -> None:
        """X-9: note the open batch ``header`` (``key`` as decide's) and
        where the walk after it ended; its transaction is stale when its
        owner is gone or it held this consumer back past its timeout."""
        since = self._walked(part_key, key, seen)
        now = time.monotonic()
        found = self._owners.get(header.producer_id)
        if found is None:
            return
        tid, doc = found
        timeout_s = doc.get("timeout_ms", DEFAULT_TRANSACTION_TIMEOUT_MS) / 1000
        if now - since > timeout_s or not owner_alive(doc.get("owner")):
            self.stale[tid] = (doc["producer_id"], doc["epoch"])
