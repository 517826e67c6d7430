"""The appends of idempotent and transactional producers and of control
batches (FORMAT.rst X-1 to X-3, X-5): a mixin of :class:`pylog.writer.Writer`,
whose locks, appender and sync it uses.

Thread safety: as the Writer's appends (its writer lock and the
partition's append lock). Durability: as :meth:`Writer.append`, except
where ``sync=False`` says a transaction makes the records durable at its
commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from . import _native, batch
from .errors import ProducerFencedError
from .producerstate import PartitionProducers

OPEN = "OPEN"        # the partition's state (pylog.partition), as pylog.writer
T = TypeVar("T")


class ProducerAppends:
    """Writer methods for batches that carry producer fields."""

    _part: Any
    _wlock: Any
    _appender: Any
    _sync_always: bool
    _producers: PartitionProducers | None
    name: str
    # the Writer's own methods (annotations only: the Writer defines them)
    _locked_append_step: Any
    _append_locked: Any
    _appender_or_none: Any
    _forked: bool
    _append_native: Any
    _appender_ready: Any
    _writer_segment: Any
    _sync_through: Any
    _ring: Any

    def append_producer(self, records: Any, fields: batch.ProducerFields, *,
                        compression: str | None = None, sync: bool = True) -> int:
        """Append one batch carrying producer fields (X-1): an idempotent or
        transactional producer's records, or a control batch (X-2). Return
        its base offset; when the same batch (producer id, epoch, sequences)
        is among the producer's last ones in the partition, append nothing
        and return that batch's base offset (X-3). Raises
        ProducerFencedError when the partition saw a newer epoch of the
        producer id (X-5). ``sync=False``: not made durable here, even with
        sync="always" (a transaction makes its partitions durable once, at
        its commit); else as :meth:`Writer.append`."""
        base, target = self._step_and_ring(lambda: (
            self._append_producer_locked(records, fields, compression),
            self._appender.written_next))
        if sync and self._sync_always:
            self._sync_through(target)
        return base

    def _step_and_ring(self, step: Callable[[], T]) -> T:
        """``step()`` in one hold of the append lock (the partition checked
        before and after taking it), then the doorbell rung (L-3)."""
        if self._part.status is not OPEN:
            self._part.check()
        with self._wlock:
            if self._part.status is not OPEN:
                self._part.check()
            result: T = self._locked_append_step(step)
            self._ring()
        return result

    def fence_producer(self, pid: int, epoch: int, first: int) -> int:
        """X-9: in one hold of the append lock, find where the transaction
        of (``pid``, ``epoch``) still open in this partition begins (after
        the last COMMIT control batch of that epoch at or past ``first``,
        else ``first``: Reader.last_commit) and append an ABORT control
        batch of epoch + 1 after it, so that a COMMIT of ``epoch`` is
        refused from then on (X-5). Returns that beginning. Not made
        durable here (the X-8 entries that follow decide)."""
        key, value = batch.control_record(batch.ABORT)
        fields = batch.ProducerFields(pid, epoch + 1, -1,
                                      batch.TRANSACTIONAL_MASK | batch.CONTROL_MASK)
        record = [(time.time_ns() // 1_000_000, key, value, ())]

        def step() -> int:
            begin: int = self._part.reader.last_commit(pid, epoch, first)
            try:
                self._append_producer_locked(record, fields, None)
            except ProducerFencedError:
                pass     # a newer epoch came here: a COMMIT of `epoch` is refused already
            return begin
        return self._step_and_ring(step)

    def append_one_producer(self, timestamp_ms: int, key: bytes | None,
                            value: bytes | None, fields: batch.ProducerFields, *,
                            sync: bool = True) -> int | None:
        """:meth:`Writer.append_one` (no header) with producer fields (X-1):
        a producer's record after its first batch in the partition, which
        checked the producer state (X-3, X-5 are not checked again).
        Returns the offset, or None when the caller must use
        :meth:`append_producer`. ``sync=False``: not made durable here (a
        transaction's record); else durable per the sync mode."""
        with self._wlock:
            a = self._appender_or_none()
            if a is None:
                return None
            (a.producer_id, a.producer_epoch, a.base_sequence,
             a.producer_attributes) = fields
            a.producer_set = 1
            try:
                rc: int = _native.append_record(
                    a, timestamp_ms, key or b"", -1 if key is None else len(key),
                    value or b"", -1 if value is None else len(value))
            finally:
                a.producer_set = 0
            # (anything but an offset — room, a roll, an error — is the
            # general path's to handle or report: nothing was published)
            if rc < 0:
                return None
            target = a.written_next
        if sync and self._sync_always:
            self._sync_through(target)
        return rc

    def append_columns_producer(self, timestamp_ms: int, cols: Any,
                                fields: batch.ProducerFields, *, check: bool,
                                sync: bool = True) -> int | None:
        """:meth:`Writer.append_columns` with producer fields (X-1), in one
        native call. ``check``: the batch is the producer's first in the
        partition (of its transaction), so it goes through the X-3 / X-5
        check first, under the append lock, as :meth:`append_producer`
        does; the append follows under the writer lock, which serializes
        this process's appends (another process's batch of the same
        producer id between the two is a fenced instance's, X-5). Returns
        the base offset (a retry's stored one), or None when the caller
        must use :meth:`append_producer`. ``sync`` as there."""
        if self._part.status is not OPEN:
            self._part.check()
        with self._wlock:
            if self._forked or self._part.status is not OPEN:
                return None
            if check:
                dup = self._locked_append_step(
                    lambda: self._producer_check(fields, cols.count))
                if dup is not None:
                    return dup
            a = self._appender
            (a.producer_id, a.producer_epoch, a.base_sequence,
             a.producer_attributes) = fields
            a.producer_set = 1
            try:
                base: int | None = self._append_native(
                    lambda a: _native.append_columns(a, timestamp_ms, cols), None)
            finally:
                a.producer_set = 0
            target = a.written_next
        if base is not None and sync and self._sync_always:
            self._sync_through(target)
        return base

    def _producer_check(self, fields: batch.ProducerFields, n: int) -> int | None:
        """Under the append lock: the X-3 / X-5 check of a batch of ``n``
        records against the partition's producer state, brought up to date
        first: the stored batch's base offset for a retry, else None."""
        st = self._part.state()
        seg = self._writer_segment(st)
        state = self._producers
        if state is None:
            state = self._producers = PartitionProducers(self.name)
        if st.active_position:
            state.catch_up(seg.base_offset, seg.mapped(st.active_position),
                           st.active_position, seg.read_index)
        return state.check(fields, n)

    def _append_producer_locked(self, records: Any, fields: batch.ProducerFields,
                                compression: str | None) -> int:
        """Under the append lock: the X-3 check against the partition's
        producer state (brought up to date first), then the append."""
        dup = self._producer_check(fields, len(records))
        if dup is not None:
            return dup
        state = self._producers
        assert state is not None
        base: int = self._append_locked(records, compression, fields)
        a = self._appender
        state.appended(fields, len(records), base, a.written_base, a.written_end)
        return base
