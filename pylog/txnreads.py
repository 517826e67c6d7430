"""The read_committed side of a partition's reader (FORMAT.rst X-4, X-9):
deciding a transactional batch by the control batches after it, the
last stable offset, and where an open transaction begins. A mixin of
:class:`pylog.reader.Reader`, whose segment list, maps and lock it uses.

Thread safety: as the Reader (its ``_rlock`` guards the segment list and
the maps; the methods named "under _rlock" need it held). Durability:
nothing here writes.
"""

from __future__ import annotations

import bisect
from typing import Any

from . import batch
from .errors import CorruptLogError
from .segment import Segment
from .sharedstate import State


class CommittedReads:
    """Reader methods for read_committed reads (see the module docstring)."""

    # the Reader's own (annotations only: the Reader defines them)
    _rlock: Any
    _part: Any
    topic: str
    index: int
    _segment_bases: Any
    _reader: Any
    _segment_end: Any
    _locate: Any
    _sealed_last_offset: Any

    def _txn_verdict(self, seg: Segment, m, end: int, cursor: Any, txn, st: State) -> int:
        """read_committed, at the transactional batch at the cursor, under
        _rlock: ABORTED (the cursor passed over it), OPEN (stop here) or
        COMMITTED (decode it)."""
        try:
            header = batch.read_header(m, cursor.position, end)
        except CorruptLogError as exc:
            raise exc.with_path(seg.path) from None
        verdict: int = txn.decide(
            self.topic, self.index, header,
            (seg.base_offset, cursor.position + header.size),
            lambda at, controls, pid, limit: self._walk_controls(at, st, controls, pid,
                                                                 limit))
        if verdict == batch.TXN_ABORTED:
            cursor.offset = header.last_offset + 1
            cursor.position += header.size
            cursor.base = cursor.offset
        return verdict

    def _walk_controls(self, at: tuple[int, int], st: State, controls, pid: int,
                       limit: int | None) -> tuple[tuple[int, int], bool, int]:
        """Under _rlock: walk the batches from ``at`` (segment base, byte
        position) up to the end ``st`` published, appending each control
        batch as (offset, producer id, epoch, type) to ``controls``, up to
        and with the next one of producer id ``pid``, or ``limit``
        batches; return (where it stopped, whether that is the end, how
        many batches it passed)."""
        n = 0
        for seg_base, pos, h, m in self._batches_at(at, st):
            at = seg_base, pos + h.size
            n += 1
            if h.attributes & batch.CONTROL_MASK and h.producer_id >= 0:
                controls.append((h.base_offset, h.producer_id, h.producer_epoch,
                                 batch.control_type(m, h)))
                if h.producer_id == pid:
                    return at, False, n
            if n == limit:
                return at, False, n
        return at, True, n

    def _batches_from(self, offset: int, st: State):
        """Under _rlock: :meth:`_batches_at` from the batch holding
        ``offset`` (or the first after it)."""
        bases = self._segment_bases(st)
        i = bisect.bisect_right(bases, offset) - 1
        if i < 0:
            return
        seg = self._reader(bases[i])
        end = self._segment_end(seg, st)
        pos = self._locate(seg, offset, end, self._sealed_last_offset(bases, bases[i], st))
        yield from self._walk(bases, i, pos, st)

    def _batches_at(self, at: tuple[int, int], st: State):
        """Under _rlock: (segment base, position, header, map) of each batch
        from ``at`` (segment base, byte position; none when that segment
        is gone) up to the end ``st`` published; only control batches have
        their CRC checked (the others are passed over, or read later
        whole). The map is looked up again for every batch: the caller may
        open others in between (which may unmap the one it was given)."""
        seg_base, pos = at
        bases = self._segment_bases(st)
        i = bisect.bisect_left(bases, seg_base)
        if i >= len(bases) or bases[i] != seg_base:
            return          # (deleted meanwhile: the fetch stops there too)
        yield from self._walk(bases, i, pos, st)

    def _walk(self, bases: list[int], i: int, pos: int, st: State):
        """:meth:`_batches_at` from byte ``pos`` of segment ``bases[i]``."""
        while True:
            seg = self._reader(bases[i])
            end = self._segment_end(seg, st)
            if pos >= end:
                i += 1
                if i >= len(bases):
                    return
                pos = 0
                continue
            try:
                m = seg.mapped(end)
                h = batch.read_framing(m, pos, end)
                if h.attributes & batch.CONTROL_MASK:
                    h = batch.read_header(m, pos, end)        # (small: B-4)
            except CorruptLogError as exc:
                raise exc.with_path(seg.path) from None
            yield bases[i], pos, h, m
            pos += h.size

    def last_stable(self, txn, end: int) -> int:
        """X-4: the offset of the first batch of an open transaction in the
        partition, else ``end`` (its end offset, read before ``txn`` read
        LMDB): a read_committed reader's end. One pass from the lowest arm:
        per producer id and epoch, the first batch at or past its arm since
        the last control batch that decides it; what is left undecided at
        the end, and not aborted by the index, is open."""
        arms = txn.arms(self.topic, self.index)
        if not arms:
            return end
        st = self._part.state()
        start = max(min(arms.values()), st.log_start_offset)
        pending: dict[tuple[int, int], Any] = {}    # (pid, epoch) -> first header
        with self._rlock:
            for _, _, h, m in self._batches_from(start, st):
                if h.base_offset >= end:
                    break
                if not h.attributes & batch.TRANSACTIONAL_MASK:
                    continue
                pid = h.producer_id
                arm = arms.get(pid)
                if arm is None:
                    continue            # (decided in LMDB)
                if h.attributes & batch.CONTROL_MASK:
                    kind = batch.control_type(m, h)
                    for key in [k for k in pending if k[0] == pid]:
                        if batch.txn_decision(key[1], h.producer_epoch, kind) is not None:
                            del pending[key]
                elif h.base_offset >= arm:
                    pending.setdefault((pid, h.producer_epoch), h)
        open_at = [h.base_offset for h in pending.values()
                   if not txn.aborted(self.topic, self.index, h)]
        return int(min(open_at)) if open_at else end

    def last_commit(self, pid: int, epoch: int, first: int) -> int:
        """X-9, under the append lock: the offset after the last control
        batch of producer id ``pid`` with an epoch up to ``epoch`` at or
        past ``first`` (``first`` when there is none): where that
        producer's transaction of ``epoch`` still open there, if any,
        begins. Every earlier transaction of the id ended with such a
        batch (its COMMIT, or the ABORT of the epoch after it), whatever
        epoch it ran under: an arm left behind by an abort that bumped
        the epoch covers those too."""
        st = self._part.state()
        begin = first
        with self._rlock:
            for _, _, h, _ in self._batches_from(max(first, st.log_start_offset), st):
                if h.producer_id == pid and h.producer_epoch <= epoch and \
                        h.attributes & batch.CONTROL_MASK and h.base_offset >= first:
                    begin = h.last_offset + 1
        return begin
