"""Per-partition producer state: the idempotent producer's duplicate check
and the partition-level fence (FORMAT.rst X-3, X-5).

Every batch of an idempotent or transactional producer carries its
producer id, epoch and base sequence (X-1), so the state is derived from
the partition itself, as Kafka rebuilds it from the log: for each producer
id, the highest epoch seen and its last :data:`BATCHES_KEPT` batches
(first sequence, last sequence, base offset). A writer keeps it in memory
and, under the append lock, first reads the headers of the batches other
writers appended since it last looked (only those bytes), so the state is
the partition's whatever process appended; the first use in a process
reads the active segment from its start (a restart keeps what that segment
holds, from its last 4 MiB: :data:`SCAN_BYTES`).

Thread safety: used under the writer lock and the partition's append lock
only. Durability: nothing of its own; it is as durable as the batches it
reads.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from . import batch
from .errors import CorruptLogError, ProducerFencedError

_ENTRY = struct.Struct(">ii")          # I-1: relative offset, position

# batches remembered per producer and partition (Kafka keeps 5)
BATCHES_KEPT = 5


# how much of the active segment a process reads at its first use
SCAN_BYTES = 4 << 20


def _tail_start(m: Any, end: int, index: bytes) -> int:
    """The position of the batch of the last index entry at or before
    ``end - SCAN_BYTES`` (0 when there is none, or when the index, derived
    data, does not point at a valid batch there)."""
    target = end - SCAN_BYTES
    lo, hi = 0, len(index) // 8
    if target <= 0 or not hi:
        return 0
    while lo < hi:                     # (positions increase, I-1)
        mid = (lo + hi) // 2
        if _ENTRY.unpack_from(index, mid * 8)[1] > target:
            hi = mid
        else:
            lo = mid + 1
    if lo == 0:
        return 0
    pos: int = _ENTRY.unpack_from(index, (lo - 1) * 8)[1]
    try:
        batch.read_header(m, pos, end)
    except CorruptLogError:
        return 0
    return pos


class _Producer:
    __slots__ = ("epoch", "batches")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        # (first sequence, last sequence, base offset) of the newest batches
        self.batches: deque[tuple[int, int, int]] = deque(maxlen=BATCHES_KEPT)


class PartitionProducers:
    """The producer state of one partition as one writer knows it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._producers: dict[int, _Producer] = {}
        # (segment base, byte position) the state has read up to; -1: nothing
        self._seg_base = -1
        self._pos = 0

    def catch_up(self, seg_base: int, m: Any, end: int,
                 index: Callable[[], bytes]) -> None:
        """Read the headers of the batches of the active segment (base
        ``seg_base``, mapped as ``m``) between what was read and ``end``,
        at most about the last :data:`SCAN_BYTES` of them (from the batch
        of an offset index entry, I-1, which ``index()`` reads)."""
        if seg_base != self._seg_base or self._pos > end:
            self._seg_base, self._pos = seg_base, _tail_start(m, end, index())
        elif end - self._pos > SCAN_BYTES:
            # (others appended much since: their older batches are skipped)
            self._pos = max(self._pos, _tail_start(m, end, index()))
        pos = self._pos
        while pos < end:
            # (the CRC of a whole batch for its header fields: a data batch is
            # checked when read; a control batch, small, here)
            h = batch.read_framing(m, pos, end)
            if h.attributes & batch.CONTROL_MASK:
                h = batch.read_header(m, pos, end)
            if h.producer_id >= 0:
                self._note(h.producer_id, h.producer_epoch, h.base_sequence,
                           h.records_count, h.base_offset,
                           bool(h.attributes & batch.CONTROL_MASK))
            pos += h.size
        self._pos = pos

    def _note(self, pid: int, epoch: int, seq: int, n: int, base: int,
              control: bool) -> None:
        p = self._producers.get(pid)
        if p is None:
            p = self._producers[pid] = _Producer(epoch)
        elif epoch > p.epoch:
            p.epoch = epoch
            p.batches.clear()            # sequences restart with an epoch
        elif epoch < p.epoch:
            return                      # (a fenced zombie's, kept out of the state)
        if not control and seq >= 0:
            p.batches.append((seq, seq + n - 1, base))

    def check(self, fields: batch.ProducerFields, n: int) -> int | None:
        """X-3 and X-5 for a batch of ``n`` records about to be appended:
        the base offset of the same batch already in the partition (a
        retry: not appended again), or None to append it. Raises
        ProducerFencedError when the partition has seen a newer epoch of
        the producer id."""
        p = self._producers.get(fields.producer_id)
        if p is None:
            return None
        if fields.producer_epoch < p.epoch:
            raise ProducerFencedError(
                f"append to {self.name}: producer id {fields.producer_id} epoch "
                f"{fields.producer_epoch} was fenced by epoch {p.epoch} (a newer "
                "producer with the same transactional_id, or its transaction "
                "was aborted); close this producer")
        if fields.producer_epoch == p.epoch and fields.base_sequence >= 0 and \
                not fields.attributes & batch.CONTROL_MASK:
            last = fields.base_sequence + n - 1
            for first_seq, last_seq, base in p.batches:
                if first_seq == fields.base_sequence and last_seq == last:
                    return base
        return None

    def appended(self, fields: batch.ProducerFields, n: int, base: int,
                 seg_base: int, end: int) -> None:
        """This writer appended the batch at ``base`` ending at ``end``."""
        self._note(fields.producer_id, fields.producer_epoch, fields.base_sequence, n,
                   base, bool(fields.attributes & batch.CONTROL_MASK))
        if seg_base == self._seg_base:
            self._pos = end
