"""The idempotent and transactional producer (Kafka's ``enable.idempotence``
and ``transactional.id``; FORMAT.rst X-1 to X-8).

``log.producer(idempotent=True)`` gets a producer id (X-7); each batch it
appends carries the id, epoch 0 and its sequence per partition (X-1), and a
batch appended again with the same id, epoch and sequences (a retry) is not
stored twice: the append returns the first one's offsets (X-3).

``log.producer(transactional_id="name")`` is also idempotent, and
transactional::

    p.begin_transaction()
    p.send("out", b"...")                       # any topics and partitions
    p.send_offsets_to_transaction(consumer)     # the inputs' offsets
    p.commit_transaction()                      # or abort_transaction()

or ``with p.transaction(): ...`` (commits on a normal exit, aborts on an
exception). The records and offsets become visible to read_committed
consumers together at the commit, or never; read_uncommitted consumers
see the records at once, as in Kafka. Making a producer with a
``transactional_id`` fences every older producer of that id (their next
call raises ProducerFencedError) and aborts the transaction an older one
left open. A transaction open longer than ``transaction_timeout_ms``, or
whose process died, is aborted by the next producer of the id or by a
read_committed consumer it holds back (pylog.transactions).

Thread safety: thread-safe; calls are serialized by one lock per producer
(a transaction is the producer's, not a thread's). Durability: inside a
transaction ``send`` returns once the record is in the log (safe from a
process crash) but not fsynced; ``commit_transaction`` makes the records
durable (fdatasync of every partition written, with sync="always" or when
the transaction commits offsets) before the commit point (an LMDB commit,
durable per the sync mode). In the other modes a power loss may lose the
records of a transaction whose decision it keeps, as those modes lose the
last interval. Outside transactions, as Producer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import batch, transactions
from .config import validate_group_id
from .errors import (
    CommitFailedError,
    ForkedLogError,
    InvalidArgument,
    LogClosed,
    ProducerFencedError,
    PylogError,
    TransactionError,
)
from .producer import Producer, Serializer, close_producers_of

if TYPE_CHECKING:
    from .partition import Partition
    from .store import LogStore

_SEQ_MASK = 0x7FFFFFFF      # sequences wrap at int32 (Kafka)
#: after a commit of X-10, an arm this far below its partition's end moves
#: up (an LMDB write): it bounds what readers and aborters walk (X-4, X-9)
REARM_OFFSETS = 16_384

# Transactional producers of this process (their Log's close aborts what
# they left open, so it does not hold read_committed readers back).
_TRANSACTIONAL: weakref.WeakSet[IdempotentProducer] = weakref.WeakSet()
# (a fork child's copies are the parent's: its close must not abort them)
os.register_at_fork(after_in_child=_TRANSACTIONAL.clear)


# the id is part of an LMDB key (511 bytes at most, with its prefix)
_TID_BYTES_MAX = 500


def _key_bytes(tid: str) -> int:
    """The UTF-8 length of ``tid``; past any bound for a lone surrogate."""
    try:
        return len(tid.encode())
    except UnicodeEncodeError:
        return _TID_BYTES_MAX + 1


def check_producer_args(transactional_id: object, idempotent: object,
                        transaction_timeout_ms: object) -> None:
    """InvalidArgument for a bad ``Log.producer`` transactional argument."""
    if transactional_id is not None and (not isinstance(transactional_id, str) or
                                         not transactional_id or
                                         len(transactional_id) > 249 or
                                         "\0" in transactional_id or
                                         _key_bytes(transactional_id) > _TID_BYTES_MAX):
        raise InvalidArgument(f"transactional_id={transactional_id!r:.80}; expected a "
                              "non-empty str of at most 249 characters and "
                              f"{_TID_BYTES_MAX} bytes in UTF-8, no NUL")
    if not isinstance(idempotent, bool):
        raise InvalidArgument(f"idempotent={idempotent!r}; expected True or False")
    if isinstance(transaction_timeout_ms, bool) or \
            not isinstance(transaction_timeout_ms, int) or \
            not 1 <= transaction_timeout_ms <= transactions.TRANSACTION_TIMEOUT_MS_MAX:
        raise InvalidArgument(
            f"transaction_timeout_ms={transaction_timeout_ms!r}; expected an int in "
            f"[1, {transactions.TRANSACTION_TIMEOUT_MS_MAX}]")


class IdempotentProducer(Producer):
    """Create with :meth:`Log.producer` and ``idempotent=True`` or a
    ``transactional_id`` (see the module docstring)."""

    def __init__(self, log: LogStore, *, transactional_id: str | None = None,
                 transaction_timeout_ms: int = transactions.DEFAULT_TRANSACTION_TIMEOUT_MS,
                 key_serializer: Serializer | None = None,
                 value_serializer: Serializer | None = None) -> None:
        super().__init__(log, key_serializer=key_serializer,
                         value_serializer=value_serializer)
        self._fast_ok = False            # every append goes through _append_records
        self._tlock = threading.RLock()
        self.transactional_id = transactional_id
        self._seqs: dict[tuple[str, int], int] = {}
        self._in_txn = False
        # this instance's number of its open transaction (transactions.end)
        self._txn_no = 0
        # the partition whose COMMIT control batch a one-partition commit
        # is appending: an abort after an interrupt there looks for it
        self._committing_one: tuple[str, int] | None = None
        # a commit began: no send until it ends (Kafka's COMMITTING state)
        self._committing = False
        self._txn_parts: dict[tuple[str, int], Partition] = {}
        # offset of this transaction's first batch in each partition
        self._txn_first: dict[tuple[str, int], int] = {}
        # the partitions armed for this producer id and their bounds
        self._arms: dict[tuple[str, int], tuple[Partition, int]] = {}
        self._txn_offsets: dict[str, dict[tuple[str, int], int]] = {}
        self._txn_inputs: set[tuple[str, int]] = set()
        self._txn_members: dict[str, str] = {}
        # partitions whose producer state a batch of this producer id and
        # epoch was checked against, with the end offset after
        # this producer's last append there: an end that moved since means
        # another batch came between, perhaps a fencer's ABORT, so
        # the next append is checked again
        self._checked: dict[tuple[str, int], int] = {}
        self._fenced: ProducerFencedError | None = None
        # a send of the open transaction that failed: it may hold some of
        # its records, so it can only be aborted (Kafka's abortable error)
        self._txn_error: BaseException | None = None
        # control batches a failed append left unwritten (see _write_markers)
        self._unwritten: list[tuple[int, int, int, list[transactions.Marker]]] = []
        # the document may name control batches this producer wrote
        self._named = False
        self._pid = os.getpid()          # see _forked
        if transactional_id is None:
            self.producer_id = transactions.allocate_producer_id(log)
            self.epoch = 0
        else:
            got = transactions.init(log, transactional_id, transaction_timeout_ms)
            self.producer_id, self.epoch = got.producer_id, got.epoch
            # (what an older instance left open is aborted here, with the
            # control batches still named written first; else they are)
            finished = transactions.finish_aborting(log, transactional_id)
            if not finished:
                self._write_markers(got.markers)
            self._named = bool(got.markers) and not finished
            _TRANSACTIONAL.add(self)

    # -- appending -----------------------------------------------------------
    def _prepare(self, part: Partition) -> tuple[tuple[str, int], str | None, int,
                                                 batch.ProducerFields, Any]:
        """Under _tlock, before an append to ``part``: (key, transactional
        id, sequence, producer fields, writer), the partition registered in
        the open transaction first (X-6)."""
        self._usable()
        if self._pid != os.getpid():
            self._forked()
        if self._committing:
            raise _interrupted_commit("send")
        key = (part.topic, part.index)
        tid = self.transactional_id
        if tid is not None and (not self._in_txn or self._txn_parts.get(key) is not part):
            # (a partition object other than the one joined: its topic was
            # deleted and made again, and the new partition joins afresh)
            self._join(part, key)
        seq = self._seqs.get(key, 0)
        fields = batch.ProducerFields(self.producer_id, self.epoch, seq,
                                      batch.TRANSACTIONAL_MASK if tid else 0)
        writer = part.writer
        assert writer is not None          # (_check refused a read-only log)
        return key, tid, seq, fields, writer

    def _append_records(self, part: Partition, records: Any) -> int:
        """X-1: append ``records`` as one batch with this producer's id,
        epoch and sequence (X-3: a retry is not stored twice); inside a
        transaction the partition is registered first (X-6) and the batch
        is transactional and not fsynced."""
        with self._tlock, self._failing_txn():
            key, tid, seq, fields, writer = self._prepare(part)
            self._note_first(part, key, tid)
            base = None
            checked = True
            if len(records) == 1 and not records[0][3] and \
                    part.config.compression is None and self._unchanged(part, key):
                # the per-record path: this partition's state was checked
                # by this producer's (this transaction's) last batch there,
                # and nothing was appended since
                ts, k, v, _ = records[0]
                base = writer.append_one_producer(ts, k, v, fields, sync=tid is None)
                checked = False
            if base is None:
                checked = True
                base = self._guard(lambda: writer.append_producer(
                    records, fields, compression=part.config.compression,
                    sync=tid is None))
            self._note_checked(key, int(base), len(records), checked)
            self._seqs[key] = (seq + len(records)) & _SEQ_MASK
            return int(base)

    def _append_column_batch(self, part: Partition, ts: int, cols: Any,
                             keys: list[bytes] | None, values: list[bytes]) -> int:
        """send_batch's column path (one native call, no Python loop per
        record) with this producer's fields, as :meth:`_append_records`."""
        with self._tlock, self._failing_txn():
            key, tid, seq, fields, writer = self._prepare(part)
            self._note_first(part, key, tid)
            check = not self._unchanged(part, key)
            base = self._guard(lambda: writer.append_columns_producer(
                ts, cols, fields, check=check, sync=tid is None))
            if base is None:            # (the segment must roll, or a slow path)
                recs = [(ts, k, v, ()) for k, v in
                        zip(keys if keys else [None] * len(values), values)]
                return self._append_records(part, recs)
            self._note_checked(key, int(base), len(values), check)
            self._seqs[key] = (seq + len(values)) & _SEQ_MASK
            return int(base)

    def _note_first(self, part: Partition, key: tuple[str, int], tid: str | None) -> None:
        """Before the open transaction's first append to ``part``: note the
        partition's end as where its batches there begin (the X-8 entry of
        an abort). Noted before the append, not from its result, so that
        an interrupt (Ctrl-C) between the append and this producer's
        bookkeeping cannot leave a batch outside the abort's entry; batches
        appended between this read and the append are other producers'."""
        if tid is not None and key not in self._txn_first:
            self._txn_first[key] = part.state().next_offset

    def _unchanged(self, part: Partition, key: tuple[str, int]) -> bool:
        """May the next append to ``part`` skip the X-3 / X-5 check? Yes
        when this producer's last batch there was checked and still ends
        the partition: a fencer appends an ABORT of a newer epoch to every
        partition it fences (X-9) before it goes on, so a fenced producer's
        next append finds the end moved and takes the check, which raises
        ProducerFencedError."""
        end = self._checked.get(key)
        return end is not None and part.state().next_offset == end

    def _note_checked(self, key: tuple[str, int], base: int, n: int, checked: bool) -> None:
        """After an append of ``n`` records at ``base``: where the partition
        ends after this producer's last checked batch (:meth:`_unchanged`).
        An unchecked append that did not land where that batch ended found
        another batch in between (a fencer's ABORT, X-9, that came after
        the end was read): the next append is checked again, so at most
        this one racing append gets past a fence (X-5)."""
        if checked or self._checked.get(key) == base:
            self._checked[key] = base + n
        else:
            self._checked.pop(key, None)

    @contextlib.contextmanager
    def _failing_txn(self) -> Iterator[None]:
        """An append of the open transaction that raises (a full disk, an
        I/O error, Ctrl-C; not a fence, not a send refused before the
        transaction began) leaves it abortable only."""
        try:
            yield
        except ProducerFencedError:
            raise
        except BaseException as exc:
            if self._in_txn and self._txn_error is None:
                self._txn_error = exc
            raise

    def _join(self, part: Partition, key: tuple[str, int]) -> None:
        """Under _tlock, before a transactional producer's first append to
        ``part`` in this transaction: TransactionError outside one, else
        the partition joins it, armed first if it is not (X-6: an LMDB
        write, once per partition and producer)."""
        tid = self.transactional_id
        assert tid is not None
        if not self._in_txn:
            raise TransactionError(
                f"send to {part.name}: producer {tid!r} is transactional; "
                "call begin_transaction() first (or use `with "
                "producer.transaction():`)")
        arm = self._arms.get(key)
        if not self._txn_parts and self._named:
            # Before any record of this transaction, the control batches
            # of the last decision are written and no longer named in
            # LMDB: written again after this transaction's records (by
            # whoever aborts it), they would read as its decision.
            if self._unwritten:
                self._write_markers(self._unwritten)
            if arm is not None and arm[0] is part:
                self._guard(lambda: transactions.markers_written(
                    self._log, tid, self.producer_id, self.epoch))
                self._named = False
        if self._txn_parts.get(key, part) is not part:
            self._txn_first.pop(key, None)   # (the old topic's records are gone)
        if arm is None or arm[0] is not part:
            first = part.state().next_offset
            self._guard(lambda: transactions.register(
                self._log, tid, self.producer_id, self.epoch, part.topic,
                part.index, first, not self._unwritten))
            self._arms[key] = (part, first)
            self._named = False
        self._txn_parts[key] = part

    def _forked(self) -> None:
        """First use in a fork() child: the parent goes on with this
        producer id and its sequences, so the child's batches would take
        the same sequences and one side's be dropped as retries of the
        other's (X-3). An idempotent producer takes a new producer id; a
        transactional one (its id, epoch and open transaction are the
        parent's) raises ForkedLogError."""
        if self.transactional_id is not None:
            raise ForkedLogError(
                f"transactional producer {self.transactional_id!r} was made before "
                "os.fork(); its transaction is the parent's: make a new producer "
                "in the child")
        self.producer_id = transactions.allocate_producer_id(self._log)
        self.epoch = 0
        self._seqs = {}
        self._checked = {}
        self._pid = os.getpid()

    def _guard(self, fn: Any) -> Any:
        """Run ``fn``; a ProducerFencedError makes this producer unusable."""
        try:
            return fn()
        except ProducerFencedError as exc:
            self._fenced = exc
            self._in_txn = False
            raise

    def _usable(self) -> None:
        if self._fenced is not None:
            raise ProducerFencedError(str(self._fenced))
        if self._closed:        # (another thread closed it: see close)
            raise LogClosed("producer is closed")

    def _need_tid(self, what: str) -> str:
        if self.transactional_id is None:
            raise TransactionError(f"{what}: this producer has no transactional_id; "
                                   "make it with log.producer(transactional_id=...)")
        self._check()
        self._usable()
        if self._pid != os.getpid():
            self._forked()
        return self.transactional_id

    # -- transactions ----------------------------------------------------------
    def begin_transaction(self) -> None:
        """Start a transaction (local: nothing is written until a send).
        TransactionError when one is open already."""
        with self._tlock:
            self._need_tid("begin_transaction")
            if self._in_txn:
                raise TransactionError("begin_transaction: a transaction is already "
                                       "open; commit or abort it first")
            self._in_txn = True
            self._txn_no += 1
            self._txn_parts = {}
            self._txn_first = {}
            self._txn_offsets = {}
            self._txn_inputs = set()
            self._txn_members = {}

    def send_offsets_to_transaction(self, offsets: Any, group_id: str | None = None) -> None:
        """Commit consumer offsets with the transaction (Kafka's
        ``sendOffsetsToTransaction``): ``offsets`` is {TopicPartition: next
        offset to read} with ``group_id``, or a Consumer, whose group and
        positions after the records it handed out are taken, without a
        look at its group (a rebalance waits for its next poll; the commit
        raises CommitFailedError if the member lost one of them by then).
        They are stored exactly when the transaction commits.
        InvalidArgument for a group id log.consumer() refuses."""
        with self._tlock:
            self._need_tid("send_offsets_to_transaction")
            if not self._in_txn:
                raise TransactionError("send_offsets_to_transaction: no transaction is "
                                       "open; call begin_transaction() first")
            if self._committing:
                raise _interrupted_commit("send_offsets_to_transaction")
            member = None
            if not isinstance(offsets, Mapping):
                consumer = offsets
                group = getattr(consumer, "group_id", None)
                if not callable(getattr(consumer, "assignment", None)):
                    raise InvalidArgument(
                        "send_offsets_to_transaction: expected {TopicPartition: "
                        f"offset}} or a Consumer, got {type(offsets).__name__}")
                group_id = group_id if group_id is not None else group
                offsets, member = _consumer_offsets(consumer)
                if member is not None and group_id != group:
                    member = None
            if group_id is None:
                raise InvalidArgument("send_offsets_to_transaction: a group_id (or a "
                                      "Consumer with one) is needed")
            validate_group_id(group_id, "send_offsets_to_transaction: group_id")
            checked: dict[tuple[str, int], int] = {}
            for tp, off in offsets.items():
                if hasattr(off, "offset"):           # OffsetAndMetadata
                    off = off.offset
                if not isinstance(tp, tuple) or len(tp) != 2 or \
                        isinstance(off, bool) or not isinstance(off, int) or \
                        not 0 <= off < 2**63:      # (int64 in LMDB, M-6)
                    raise InvalidArgument(
                        f"send_offsets_to_transaction: {tp!r}: {off!r}; expected "
                        "TopicPartition: offset in [0, 2**63)")
                self._log.partition(tp[0], tp[1])    # TopicNotFound, PartitionNotFound
                checked[(tp[0], tp[1])] = off
            if member is not None:
                # the commit point checks it still owns them (Kafka's
                # groupMetadata in sendOffsetsToTransaction)
                self._txn_members[group_id] = member.member_id
            self._txn_offsets.setdefault(group_id, {}).update(checked)
            self._txn_inputs.update(checked)

    def commit_transaction(self) -> None:
        """Make the transaction's records and offsets visible, atomically.
        Raises TransactionError when none is open, ProducerFencedError when
        this producer was fenced (the transaction was then aborted), and
        CommitFailedError when the group consumer given to
        send_offsets_to_transaction no longer owns a partition it named (a
        rebalance), or TransactionError when a send of the transaction
        failed (a full disk, an I/O error: as Kafka's abortable errors):
        nothing was committed, the transaction is still open; abort it.
        Past its commit point (the decision stored in LMDB) it
        returns: a control batch it could not append then (a full disk) is
        logged as a warning and written by this producer's next
        transaction or close, and readers already follow the decision."""
        self._end(True)

    def abort_transaction(self) -> None:
        """Drop the transaction: its records are never shown to
        read_committed consumers, its offsets never stored. A transaction
        a commit_transaction() interrupted (Ctrl-C) past its commit point
        decided stays committed (logged as a warning), as a commit_transaction()
        called again then finds it committed."""
        self._end(False)

    def _end(self, commit: bool) -> None:
        what = "commit_transaction" if commit else "abort_transaction"
        with self._tlock:
            tid = self._need_tid(what)
            if not self._in_txn:
                raise TransactionError(f"{what}: no transaction is open")
            if commit and self._txn_error is not None:
                raise TransactionError(
                    f"commit_transaction: a send of this transaction failed "
                    f"({self._txn_error!r}), so it may hold some of its records but "
                    "not all; call abort_transaction() and send them again")
            if commit:
                # an interrupt from here may leave it decided: a record sent
                # after that would land past the commit point and be shown
                # by its markers (an abort then changes nothing)
                self._committing = True
            if commit and len(self._txn_parts) == 1 and not any(self._txn_offsets.values()) \
                    and not self._unwritten:
                self._commit_one(tid)
                return
            if not commit and self._committed_one():
                return
            log = self._log
            if commit:
                # the records durable before the commit point with
                # sync="always", and in every mode when it stores offsets
                # (as M-10: offsets never reach LMDB ahead of what a power
                # loss could take, here the outputs of the inputs they pass)
                if log.sync == "always" or any(self._txn_offsets.values()):
                    for part in self._txn_parts.values():
                        part.flush()
                if log.sync != "always":
                    for t, p in self._txn_inputs:
                        log.partition(t, p).sync_for_commit()
            got = self._guard(lambda: transactions.end(
                log, tid, self.producer_id, self.epoch, commit, list(self._txn_parts),
                {} if commit else self._txn_first, self._txn_offsets if commit else {},
                self._txn_members, not self._unwritten, self._txn_no))
            if got.committed_before:
                commit = True
                if what == "abort_transaction":
                    logging.getLogger("pylog").warning(
                        "transaction %r was committed before this abort (an "
                        "interrupt or an error came after its commit point): it stays "
                        "committed", tid)
            if (got.producer_id, got.epoch) != (self.producer_id, self.epoch):
                self._seqs.clear()           # a new epoch restarts the sequences
                self._checked = {}
            self.producer_id, self.epoch = got.producer_id, got.epoch
            self._moved_arms(got.arms)
            self._closed_txn()
            self._named = True
            try:
                self._write_markers(got.markers)
            except ProducerFencedError as exc:
                # decided already (the commit point above): a fencer wrote
                # the markers LMDB names before its own; this
                # producer is done, the transaction stands
                self._fenced = exc
                self._unwritten = []
            except PylogError as exc:
                # decided already: raising would tell the caller it was not
                # (and a retry would send it twice); LMDB names the markers
                # until they are written (_write_markers)
                logging.getLogger("pylog").warning(
                    "transaction %r %s, but its control batches are not written yet "
                    "(%s); this producer writes them at its next transaction or "
                    "close", tid, "committed" if commit else "aborted", exc)

    def _commit_one(self, tid: str) -> None:
        """X-10: commit a transaction confined to one partition, without
        offsets: its COMMIT control batch (checked and appended in one hold
        of the append lock, X-5) is the commit point; with sync="always"
        one fdatasync then makes it and the records durable together."""
        (key, part), = self._txn_parts.items()
        pid, epoch = self.producer_id, self.epoch
        # (fenced: every partition armed by this producer got an ABORT of a
        # newer epoch before the fencer went on, X-9, so the check of the
        # marker's append raises ProducerFencedError)
        if key not in self._txn_first:
            self._closed_txn()           # (nothing was appended)
            return
        self._committing_one = key
        self._guard(lambda: transactions.write_markers(
            self._log, pid, epoch, batch.COMMIT, [key]))
        self._closed_txn()               # committed: what follows only syncs
        if self._log.sync == "always":
            part.flush()
        arm = self._arms.get(key)
        if arm is not None and part.state().next_offset - arm[1] > REARM_OFFSETS:
            try:
                arms = transactions.rearm(self._log, tid, pid, epoch)
            except ProducerFencedError as exc:
                self._fenced = exc   # (after the commit point: it stands)
                return
            self._moved_arms(arms)

    def _moved_arms(self, arms: list[Any]) -> None:
        """The arms LMDB now holds (a decision or a re-arm moved them up,
        X-6), for the partitions this producer armed."""
        self._arms = {(t, p): (self._arms[(t, p)][0], first)
                      for t, p, first in arms if (t, p) in self._arms}

    def _committed_one(self) -> bool:
        """Before an abort: did a one-partition commit interrupted (Ctrl-C)
        past its COMMIT control batch, its commit point (X-10), decide the
        transaction? Then it is closed as committed, and the abort changes
        nothing (its X-8 entry would hide the committed records)."""
        key = self._committing_one
        if key is None or key not in self._txn_first:
            return False
        first = self._txn_first[key]
        part = self._txn_parts[key]
        if part.reader.last_commit(self.producer_id, self.epoch, first) == first:
            return False
        logging.getLogger("pylog").warning(
            "transaction %r was committed before this abort (an interrupt or an "
            "error came after its commit point): it stays committed", self.transactional_id)
        self._closed_txn()
        return True

    def _closed_txn(self) -> None:
        self._committing_one = None
        self._committing = False
        self._in_txn = False
        self._txn_error = None
        self._txn_parts = {}
        self._txn_offsets = {}
        self._txn_first = {}

    def _write_markers(self, todo: list[tuple[int, int, int, list[transactions.Marker]]]
                       ) -> None:
        """X-2: write the control batches ``todo`` (after the commit point).
        The transaction document names them until this producer's next
        transaction registers its first partition (X-6), which first writes
        again those an append failure (out of maps, a full disk) left out:
        a decided transaction always gets its markers, for Kafka's readers."""
        self._unwritten = todo
        for pid, epoch, kind, parts in todo:
            transactions.write_markers(self._log, pid, epoch, kind, parts)
        self._unwritten = []

    @contextlib.contextmanager
    def transaction(self) -> Iterator[IdempotentProducer]:
        """``with producer.transaction():`` begins a transaction, commits it
        when the block ends normally and aborts it when it raises (the
        exception goes on), or when the commit raises an error
        (CommitFailedError: a rebalance moved an input partition away;
        TransactionError: a send of it failed; DiskFullError or LogOSError:
        its LMDB commit stored nothing), the error going on. An interrupt
        (KeyboardInterrupt) of the commit itself leaves it open:
        commit_transaction() or abort_transaction() decide (past the commit
        point both find it committed)."""
        self.begin_transaction()
        try:
            yield self
        except BaseException:
            self.abort_if_open()
            raise
        try:
            self.commit_transaction()
        except Exception:
            # Left open, the transaction would refuse every later begin
            # ("already open") and hold read_committed readers back: a loop
            # that catches the error and goes on would be wedged. An abort
            # is right whatever the error: one past the commit point finds
            # the transaction committed and changes nothing.
            self.abort_if_open()
            raise

    def abort_if_open(self) -> None:
        """Abort the open transaction, if one is open and this producer was
        not fenced (what ``transaction()`` does when its block raises). A
        fence found now is not raised: the newer instance aborted the
        transaction already (X-5), which is what was asked, and the
        block's own error is the one to report."""
        with self._tlock:
            if self._in_txn and self._fenced is None:
                try:
                    self.abort_transaction()
                except ProducerFencedError:
                    pass

    def close(self, timeout: float | None = None) -> None:
        """Abort an open transaction, then as Producer.close — all under
        the producer's lock: a send or commit of another thread waiting for
        it then raises LogClosed, not TransactionError ("call
        begin_transaction() first") for the transaction aborted here."""
        with self._tlock:
            # (not in a fork child: the transaction is the parent's)
            if self._in_txn and self._fenced is None and not self._closed and \
                    not self._log._closed and self._pid == os.getpid():
                try:
                    self.abort_transaction()
                except ProducerFencedError:
                    pass                      # the fencer aborted it
            if self._unwritten and self._fenced is None and not self._closed and \
                    not self._log._closed and self._pid == os.getpid():
                try:
                    self._write_markers(self._unwritten)
                except PylogError as exc:     # (named in LMDB still: X-6)
                    logging.getLogger("pylog").warning(
                        "producer %r closed with control batches unwritten (%s); "
                        "its next instance writes them", self.transactional_id, exc)
            _TRANSACTIONAL.discard(self)
            super().close(timeout)

    def __repr__(self) -> str:
        return (f"<IdempotentProducer id={self.producer_id} epoch={self.epoch} "
                f"transactional_id={self.transactional_id!r}>")


def _consumer_offsets(consumer: Any) -> tuple[dict[Any, int], Any]:
    """({TopicPartition: position}, group member or None) of the Consumer
    given to send_offsets_to_transaction. A local Consumer's are the
    positions after the records it handed out (as its commit() without
    offsets), read without a look at its group: assignment() would run a
    rebalance tick, which revokes partitions whose records the last poll
    returned and drops them from the positions, so the transaction would
    commit their outputs without their offsets (duplicates). Every such
    partition is named, and the commit point refuses the commit when the
    member no longer owns one (CommitFailedError). Other consumers (the
    asyncio one's snapshot) say their positions with assignment() and
    position()."""
    delivery = getattr(consumer, "_delivery", None)
    if delivery is None:
        return ({tp: consumer.position(tp) for tp in consumer.assignment()},
                getattr(consumer, "_member", None))
    consumer._check()
    if consumer._lost_handed:
        raise CommitFailedError(
            f"send_offsets_to_transaction: a rebalance took "
            f"{sorted(consumer._lost_handed)} from consumer group "
            f"{consumer.group_id!r} after the last poll returned records of them "
            "(a call such as assignment() looked at the group): abort the "
            "transaction; their next owner reads those records again")
    owned = set(consumer._owned())
    offsets = {tp: off for tp, off in delivery.handed_positions().items() if tp in owned}
    grouped = consumer._manual is None
    return offsets, consumer._member if grouped else None


def close_transactional(log: LogStore) -> PylogError | None:
    """Close the transactional producers of ``log`` (aborting their open
    transactions); returns the first error, after closing them all."""
    return close_producers_of(log, _TRANSACTIONAL)


__all__ = ["IdempotentProducer", "check_producer_args", "close_transactional"]


def _interrupted_commit(what: str) -> TransactionError:
    return TransactionError(
        f"{what}: commit_transaction() of the open transaction began and did "
        "not return (an interrupt, CommitFailedError): call commit_transaction() "
        "again or abort_transaction() before sending more")
