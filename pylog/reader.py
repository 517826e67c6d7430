"""The reads of one partition: its segment list, an LRU of reader maps,
fetch, the blocked poll's wait_fetch, and the time lookup (FORMAT.rst P-2,
S-1, S-2, I-2, I-3, T-3).

A fetch decodes every uncompressed batch of a segment range in one native
call (``_native.fetch``: framing, CRC and the dense offset sequence checked
batch by batch); a compressed batch is decompressed and decoded on its own.
Readers never look past the published end (P-2), so they see only whole,
committed batches, however the writer wrote them (through the map or with
``pwrite``).

The GIL and doorbell hand-off (the blocked poll, in one place): a consumer
blocked in ``poll`` sleeps in :meth:`Reader.wait_fetch` on its log's
doorbell slot (L-3) inside one native call, without the GIL. An append
rings the slot after it publishes. The woken call decodes, still without
the GIL, what the partition committed after the cursor in its active
segment, so the records are ready when the interpreter is back. Within one
process the woken thread must also get the GIL, which the appending thread
holds: an append of this process that wakes a waiter therefore waits,
bounded, until the woken thread holds the GIL (``_native.Handoff``, shared
with the writer's appender; not with sync="always", whose append releases
the GIL for its fdatasync right after anyway). Anything the woken call
cannot decode (the segment rolled or outgrew the reader's map, the wake was
for another partition) is left to an ordinary :meth:`Reader.fetch`.

Thread safety: every public method is thread-safe; the reader lock
(``_rlock``) guards the segment list and the maps, and is not held while
wait_fetch sleeps. A map another thread closes meanwhile stays mapped while
a native call holds it (Segment.hold). Durability: reads change nothing,
except that a rebuilt index may be written back (pylog.index.write_back)
and :meth:`Reader.sync_for_commit` fdatasyncs the active segment.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from functools import partial

from . import _native, batch
from ._locks import try_acquire
from .errors import (
    CorruptLogError,
    LogFailedError,
    LogOSError,
    OffsetOutOfRange,
    PylogError,
    TooManyMapsError,
    TooManyOpenFilesError,
)
from .handles import READER_COST
from .index import checked_indexes, last_timestamp, write_back
from .segment import Segment, list_segment_bases, open_segment, segment_path, with_fds
from .sharedstate import State
from .txnreads import CommittedReads

# G7: reader maps kept open per partition (the least recently used goes)
READER_MAPS_MAX = 4


# no read_committed limit
_NO_LIMIT = 2**63 - 1


class Cursor:
    """A reader's position in one partition: the next offset to return and,
    when known, the segment and byte position of the batch holding it, and
    that batch's baseOffset (-1 when located through the sparse index).

    ``topic_id`` is the incarnation of the topic (L-4) the position was
    taken in; None until a consumer's first fetch binds it. An offset of
    a deleted topic means nothing in a topic made again under its name:
    a consumer drops a cursor whose incarnation is not its partition's.

    ``kept``: the rows of a batch this cursor read only part of (Reader's
    _one_batch), or None. They live with the cursor, so a consumer that
    closes, or lets its partition go, lets them go too."""
    __slots__ = ("offset", "segment_base", "position", "base", "topic_id", "kept")

    def __init__(self, offset: int, topic_id: str | None = None):
        self.offset = offset
        self.segment_base = -1
        self.position = -1
        self.base = -1
        self.topic_id = topic_id
        self.kept: tuple | None = None


class Reader(CommittedReads):
    """Reads of one partition (the hand-off: see the module docstring).
    ``part`` is the owning Partition: its state machine (``check``),
    published state (``state()``, and the read-only view's
    ``memory_state``), name and sync mode.

    Thread safety: thread-safe; ``_rlock`` guards the segment list and the
    LRU of maps, and is released before wait_fetch sleeps. Durability: reads
    see only published (whole, committed) batches; :meth:`sync_for_commit`
    makes the active segment durable before an offset commit."""

    def __init__(self, part, shared, handoff, handles=None):
        self._part = part
        self._handles = handles          # the Log's HandleCache (pylog.handles)
        self._shared = shared
        self._handoff = handoff
        self.dir = part.dir
        self.name = part.name
        self.topic = part.topic
        self.index = part.index
        # an RLock for its owner record (pylog._locks); never re-entered
        self._rlock = threading.RLock()
        # base offset -> reader map, least recently used first
        self._readers: OrderedDict[int, Segment] = OrderedDict()
        self._reader_sizes: dict[int, int] = {}
        self._row_builds: dict = {}      # fetch's row options per row_type
        self._bases: list[int] = []
        self._bases_gen = -1
        # index write-back (I-3) for a process that may write, by whether
        # the caller holds the append lock
        self._write_back = (None, None) if part.readonly else (
            partial(write_back, shared, part.state, locked=False),
            partial(write_back, shared, part.state, locked=True))

    @property
    def maps(self) -> dict[int, Segment]:
        """The open reader maps by base offset (for tests and inspection)."""
        return self._readers

    # -- segments ----------------------------------------------------------
    def _segment_bases(self, st: State) -> list[int]:
        if self._bases_gen != st.generation or not self._bases:
            listed = with_fds(self._handles, f"list the segments of {self.name}",
                              lambda: list_segment_bases(self.dir))
            bases = [b for b in listed if b <= st.active_base]
            # a segment wholly below log start is waiting for deletion (P-5);
            # the one holding it may begin below it (P-6)
            keep = []
            for i, b in enumerate(bases):
                nxt = bases[i + 1] if i + 1 < len(bases) else None
                if nxt is not None and nxt <= st.log_start_offset:
                    continue
                keep.append(b)
            if not keep or keep[-1] != st.active_base:
                allb = with_fds(self._handles, f"list the segments of {self.name}",
                                lambda: list_segment_bases(self.dir))
                keep = [b for b in allb if b <= st.active_base]
                if (not keep or keep[-1] != st.active_base) and self._unchanged(st):
                    # P-12: the active segment's file went since the state
                    # was published (not by a roll or retention: the layout
                    # is the same); never a short read that ends quietly
                    raise CorruptLogError(
                        f"no segment holds offsets {keep[-1] if keep else st.log_start_offset}"
                        f" to {st.next_offset - 1}: the active segment file is "
                        f"missing (P-12)", segment_path(self.dir, st.active_base))
            self._bases = keep
            self._bases_gen = st.generation
            for b in list(self._readers):
                # gone, or made again under the same name (a recovery drops
                # an empty segment of a crashed roll; the next roll may
                # create the same base): a map of the old file reads zeros
                if b not in keep or self._readers[b].replaced():
                    self._readers.pop(b).close()
                    self._reader_sizes.pop(b, None)
        return self._bases

    def _unchanged(self, st: State) -> bool:
        """Is ``st``'s segment layout still the published one (P-8)? Then
        files missing from it did not go by a roll or retention racing the
        caller (they publish first, then delete)."""
        self._bases_gen = -1        # in any case: list again next time
        # from the state file, not a read-only view's copy (up to 1 s old)
        return self._part.live_generation() == st.generation

    def _reader(self, base: int) -> Segment:
        """The reader map of segment ``base``, the most recently used of at
        most READER_MAPS_MAX (G7); under self._rlock."""
        seg = self._readers.get(base)
        if seg is not None:
            self._readers.move_to_end(base)
            seg.used = True
        else:
            if len(self._readers) >= READER_MAPS_MAX:
                old_base, old = self._readers.popitem(last=False)
                old.close()
                self._reader_sizes.pop(old_base, None)
            try:
                seg = open_segment(self._handles, self.dir, base, cost=READER_COST,
                                   release=self._release)
            except FileNotFoundError:
                raise OffsetOutOfRange(
                    f"segment {base} of {self.name} was deleted by "
                    "retention while being read") from None
            except OSError as exc:
                if isinstance(exc, PylogError):
                    raise
                # EACCES on another user's segment is not damage
                raise LogOSError.from_os_error(
                    exc, f"read segment {base} of {self.name}",
                    "a reader needs read access to every file of the log: run "
                    "as its owner or have them grant read access") from None
            self._readers[base] = seg
        return seg

    def _release(self, seg: Segment) -> bool:
        """The handle cache's call: close reader map ``seg`` unless a read
        is using it (the reader lock is busy); True when closed."""
        if not try_acquire(self._rlock):
            return False
        try:
            if self._readers.get(seg.base_offset) is seg:
                del self._readers[seg.base_offset]
                self._reader_sizes.pop(seg.base_offset, None)
            seg.close()
        finally:
            self._rlock.release()
        return True

    def _segment_end(self, seg: Segment, st: State) -> int:
        if seg.base_offset == st.active_base:
            return st.active_position
        size = self._reader_sizes.get(seg.base_offset)
        if size is None:
            size = self._reader_sizes[seg.base_offset] = seg.file_size()
        return size

    @staticmethod
    def _sealed_last_offset(bases: list[int], base: int, st: State) -> int | None:
        """Last offset of sealed segment ``base`` (None for the active one)."""
        if base == st.active_base:
            return None
        i = bisect.bisect_right(bases, base)
        return bases[i] - 1 if i < len(bases) else None

    def sync_for_commit(self) -> None:
        """Make the committed records of the active segment durable before a
        consumer commits an offset in them, from any process (a reader's
        descriptor will do): a committed offset must never point past what a
        power loss keeps. Free with sync="always", where appends already are
        durable; sealed segments are durable since their roll (S-4)."""
        if self._part.sync_mode == "always" or self._part.readonly:
            return
        self._part.check()
        st = self._part.state()
        with self._rlock:
            self._segment_bases(st)
            seg = self._reader(st.active_base)
            try:
                self._shared.synced(lambda: os.fdatasync(seg.fd))     # P-11
            except OSError as exc:
                raise LogFailedError(
                    f"fdatasync of {seg.path} before an offset commit: "
                    f"{exc.strerror} (errno {exc.errno})") from exc

    # -- reads -----------------------------------------------------------------
    def fetch(self, cursor: Cursor, max_records: int, *, values_only: bool = False,
              with_topic: bool = False, row_type=None, txn=None) -> list:
        """Up to ``max_records`` records at or after ``cursor.offset``.

        Returns tuples (offset, timestamp_ms, key, value, headers) — with
        ``with_topic``, (topic, partition, offset, ...) as pylog.Record
        orders them, built as ``row_type`` when given — or values when
        ``values_only``, and advances the cursor. Never returns records
        that are not committed (P-2). Raises OffsetOutOfRange when the cursor
        is below the log start offset and CorruptLogError (with file and
        position) when a batch fails its CRC or breaks the dense offset
        sequence (G4; baseOffset is outside the CRC). Out of descriptors
        (EMFILE/ENFILE) even after the handle cache closed what it could,
        TooManyOpenFilesError (TooManyMapsError), after returning the records
        read first.

        ``txn`` (a pylog.txnview.TxnView): read_committed (X-4): stop
        at the partition's last stable offset and leave out the batches of
        aborted transactions (X-8). Control batches (X-2) are never
        returned, in either isolation level.
        """
        self._part.check()
        st = self._part.state()
        if cursor.offset >= st.next_offset:
            if cursor.offset > st.next_offset:
                raise OffsetOutOfRange(
                    f"offset {cursor.offset} of {self.name} is past the end "
                    f"offset {st.next_offset}")
            return []
        if cursor.offset < st.log_start_offset:
            raise OffsetOutOfRange(
                f"offset {cursor.offset} of {self.name} is below the log start "
                f"offset {st.log_start_offset} (deleted by retention or delete_records)")
        out: list = []
        kept = cursor.kept
        if kept is not None and (kept[0].base_offset != cursor.segment_base
                                 or kept[1][0] != cursor.position):
            cursor.kept = None           # (moved off the batch: a seek)
        with self._rlock:
            bases = self._segment_bases(st)
            if cursor.segment_base not in bases or cursor.position < 0:
                i = bisect.bisect_right(bases, cursor.offset) - 1
                if i < 0:
                    if bases and self._unchanged(st):
                        # P-12: the state's log start is not a retention
                        # in progress (the layout is the same): the files
                        # below the first one went. OffsetOutOfRange would
                        # send an "earliest" consumer back here forever.
                        raise CorruptLogError(
                            f"no segment holds offsets {cursor.offset} to "
                            f"{bases[0] - 1}: the first segment starts at offset "
                            f"{bases[0]}, above the log start offset "
                            f"{st.log_start_offset} (a segment file lost; P-12)",
                            segment_path(self.dir, bases[0]), 0)
                    raise OffsetOutOfRange(
                        f"offset {cursor.offset} of {self.name} precedes the "
                        "first segment")
                seg = self._reader(bases[i])
                end = self._segment_end(seg, st)
                cursor.segment_base = seg.base_offset
                cursor.base = -1
                cursor.position = self._locate(
                    seg, cursor.offset, end,
                    self._sealed_last_offset(bases, seg.base_offset, st))
            build = self._row_build(values_only, with_topic, row_type)
            while len(out) < max_records:
                try:
                    seg = self._reader(cursor.segment_base)
                except (TooManyOpenFilesError, TooManyMapsError):
                    if out:
                        break    # the records read first; the next fetch raises
                    raise
                end = self._segment_end(seg, st)
                if cursor.position >= end:
                    if seg.base_offset == st.active_base:
                        break
                    i = bases.index(seg.base_offset) + 1
                    if i >= len(bases):
                        break
                    if bases[i] != cursor.offset:
                        # a segment's first batch starts at its base offset
                        # (S-1): the file that held the offsets between is
                        # gone or was cut short (G4: never skipped silently)
                        if out:
                            break    # the good records first; the next fetch raises
                        raise CorruptLogError(
                            f"no segment holds offsets {cursor.offset} to {bases[i] - 1}: "
                            f"this one ends before them and the next one starts at "
                            f"offset {bases[i]} (a segment file lost or cut short)",
                            seg.path, end)
                    # a segment's first batch starts at its base offset (S-1)
                    cursor.segment_base, cursor.position = bases[i], 0
                    cursor.base = bases[i]
                    continue
                try:
                    m = seg.mapped(end)
                except (TooManyOpenFilesError, TooManyMapsError):
                    if out:
                        break
                    raise
                if cursor.position < end:
                    # every uncompressed batch up to `end`: one native call
                    room = max_records - len(out)
                    try:
                        if txn is None:
                            recs, res = _native.fetch(seg.pointer(), m, end,
                                                      cursor.position, cursor.offset,
                                                      cursor.base, room, build)
                        else:
                            recs, res = _native.fetch_txn(
                                seg.pointer(), m, end, cursor.position, cursor.offset,
                                cursor.base, room, build, _NO_LIMIT, True)
                    except CorruptLogError as exc:
                        raise exc.with_path(seg.path) from None
                    out.extend(recs)
                    cursor.offset, cursor.position = res.next_offset, res.position
                    cursor.base = res.position_base
                    if res.stop == _native.FETCH_CORRUPT:
                        if out:
                            break    # the good records first; the next fetch raises
                        if self._drop_if_replaced(seg, locked=True):
                            continue     # read the file now at its path
                        raise CorruptLogError(res.error, seg.path, res.stop_position)
                    if res.stop == _native.FETCH_END and seg.base_offset == st.active_base:
                        break                # at the committed end (the poll path)
                    if res.stop in (_native.FETCH_END, _native.FETCH_FULL):
                        continue
                    if res.stop == _native.FETCH_TXN:
                        verdict = self._txn_verdict(seg, m, end, cursor, txn, st)
                        if verdict == batch.TXN_ABORTED:
                            continue
                        if verdict == batch.TXN_OPEN:
                            break            # the last stable offset
                        # (the walk may have opened other maps: this one again)
                        seg = self._reader(cursor.segment_base)
                        m = seg.mapped(end)
                # a compressed batch, or one too big for a native fetch: alone
                room = max_records - len(out)
                try:
                    header, recs, rest = self._one_batch(seg, m, end, cursor, values_only,
                                                         with_topic, row_type, room)
                except CorruptLogError:
                    if out:
                        break    # the good records first; the next fetch raises
                    raise
                out.extend(recs)
                if rest is not None:            # (the batch's records from `rest` on)
                    cursor.offset = rest
                    cursor.base = header.base_offset
                    break
                cursor.offset = header.last_offset + 1
                cursor.position += header.size
                cursor.base = cursor.offset
        return out

    def position(self, cursor: Cursor) -> None:
        """Locate ``cursor`` (the segment and byte of its offset, through
        the checked sparse index) and map that segment, when it is not
        located yet and has records to read: the file work of a first
        fetch (listing, opening, mapping, reading the index), without
        decoding, for a caller that does it in another thread than its
        fetches (pylog.aio's executor). Raises as :meth:`fetch`.

        Thread safety: as :meth:`fetch`; the caller keeps its own fetches
        of ``cursor`` from overlapping the call."""
        self._part.check()
        if cursor.position >= 0:
            return
        st = self._part.state()
        if not st.log_start_offset <= cursor.offset < st.next_offset:
            return
        with self._rlock:
            bases = self._segment_bases(st)
            i = bisect.bisect_right(bases, cursor.offset) - 1
            if i < 0:
                return
            seg = self._reader(bases[i])
            end = self._segment_end(seg, st)
            position = self._locate(seg, cursor.offset, end,
                                    self._sealed_last_offset(bases, seg.base_offset, st))
            seg.mapped(end)
            cursor.segment_base, cursor.base, cursor.position = seg.base_offset, -1, position

    def _row_build(self, values_only: bool, with_topic: bool, row_type) -> tuple:
        """The row options of _native.fetch for fetch's arguments."""
        if values_only:
            return _native.VALUES_ONLY
        if not with_topic:
            return _native.PLAIN_ROWS
        build = self._row_builds.get(row_type)
        if build is None:
            build = self._row_builds[row_type] = (self.topic, self.index, row_type, False)
        return build

    def wait_fetch(self, cursor: Cursor, slot_p, seen: int, timeout: float, max_records: int,
                   *, values_only: bool = False, with_topic: bool = False,
                   row_type=None) -> list | None:
        """The blocked poll's path: wait up to ``timeout`` seconds for the
        doorbell slot at ``slot_p`` (a pointer into the doorbell map, which
        the caller keeps mapped) to move from ``seen``, and
        once woken decode, in the same native call and before the
        interpreter is back, what this partition committed after ``cursor``
        in its active segment. Returns None on timeout; [] when woken with
        nothing decoded that way (the segment rolled or outgrew the reader's
        map, the cursor is not positioned in the active segment, the wake
        was for another partition of the topic, ...: the caller fetches the
        usual way); else the records as :meth:`fetch` returns them, with
        ``cursor`` advanced. A damaged batch raises CorruptLogError as in
        :meth:`fetch`.

        Thread safety: as :meth:`fetch`; the partition's read lock is held
        while the reader's map is taken, not through the wait. The call
        reads the segment through its own export of that map, so a reader
        another thread closes meanwhile stays mapped until the call is done
        (Segment.unmap). How an append of this process hands the GIL to the
        woken call: see the module docstring."""
        self._part.check()
        state_p = self._shared.rptr
        held = None
        if cursor.position >= 0 and state_p is not None and self._part.memory_state is None:
            with self._rlock:       # (another thread's fetch may remap it)
                seg = self._readers.get(cursor.segment_base)
                held = seg.hold() if seg is not None else None
        if held is None:
            woken = _native.doorbell_wait_at(slot_p, seen, timeout)
            return [] if woken else None
        ptr, m, map_len = held
        assert seg is not None       # held was taken from it
        build = self._row_build(values_only, with_topic, row_type)
        try:
            req = _native.wait_request()
            req.slot, req.expected, req.state = slot_p, seen & 0xFFFFFFFF, state_p
            req.seg_base, req.seg_len = cursor.segment_base, map_len
            req.pos, req.next, req.first_base = cursor.position, cursor.offset, cursor.base
            req.max_records = max_records
            got = _native.wait_fetch(req, ptr, m, timeout, build, self._handoff)
        except CorruptLogError as exc:
            raise exc.with_path(seg.path) from None
        if not got:
            return None if got is None else []
        return self._took(seg, got, cursor, locked=False)

    def fetch_committed(self, cursor: Cursor, max_records: int, *, with_topic: bool = False,
                        row_type=None) -> list:
        """The event loop's fetch of one partition (pylog.aio): what the
        partition committed after ``cursor`` in its active segment, decoded
        in one native call, as :meth:`wait_fetch` decodes after its wake,
        and ``cursor`` advanced. [] when that cannot answer: nothing new,
        the cursor not positioned in a reader map of the active segment,
        the segment rolled or outgrew the map, the log start passed the
        cursor, the state busy (the caller then fetches the usual way,
        which also says which). A damaged batch raises CorruptLogError as
        in :meth:`fetch`.

        Thread safety: as :meth:`fetch` (the reader lock is held through
        the native call, so no other thread unmaps the segment meanwhile)."""
        part = self._part
        part.check()
        state_p = self._shared.rptr
        if cursor.position < 0 or state_p is None or part.memory_state is not None:
            return []
        with self._rlock:
            seg = self._readers.get(cursor.segment_base)
            ptr = seg.pointer() if seg is not None else None
            if ptr is None:
                return []
            assert seg is not None
            m = seg.mapped(0)       # (the map pointer() points into)
            if m is None:
                return []
            try:
                got = _native.fetch_committed(state_p, cursor, len(m), max_records, ptr, m,
                                              self._row_build(False, with_topic, row_type))
            except CorruptLogError as exc:
                raise exc.with_path(seg.path) from None
            if not got:
                return []
            return self._took(seg, got, cursor, locked=True)

    def _took(self, seg: Segment, got, cursor: Cursor, *, locked: bool) -> list:
        """The records of a native fetch of one partition, ``got`` (rows,
        result), with ``cursor`` advanced past them; a damaged batch
        raises CorruptLogError as in :meth:`fetch` ([] when the segment's
        file was replaced: the caller fetches from the new one)."""
        recs, res = got
        if not recs and res.stop == _native.FETCH_CORRUPT:
            if self._drop_if_replaced(seg, locked=locked):
                return []
            raise CorruptLogError(res.error, seg.path, res.stop_position)
        cursor.offset, cursor.position = res.next_offset, res.position
        cursor.base = res.position_base
        return recs

    def _drop_if_replaced(self, seg: Segment, *, locked: bool) -> bool:
        """A read found damage: was it a map of a file since removed and made
        again under the same name (a recovery dropped the empty segment of a
        crashed roll, and the next roll created the same base)? Then forget
        that reader, so the next read maps the file now at the path."""
        if not seg.replaced():
            return False
        if not locked:
            with self._rlock:
                return self._drop_if_replaced(seg, locked=True)
        if self._readers.get(seg.base_offset) is seg:
            del self._readers[seg.base_offset]
            self._reader_sizes.pop(seg.base_offset, None)
            seg.close()
        return True

    def _one_batch(self, seg: Segment, m, end: int, cursor: Cursor, values_only: bool,
                   with_topic: bool, row_type, room: int):
        """(header, at most ``room`` rows from cursor.offset on, the offset
        of the batch's next row or None when they end it) of the batch at
        the cursor, decoded alone (compressed, or too big for a native
        fetch). A batch read in parts is decoded once: its rows are kept
        on the cursor (``cursor.kept``: segment, (position, crc, row
        options), rows) until a fetch reaches its end or the cursor moves
        off the batch, since decoding it again for each part made reading
        it quadratic."""
        try:
            header = batch.read_header(m, cursor.position, end)
            whole = header.base_offset == cursor.offset and header.records_count <= room
            kept = cursor.kept
            mode = (values_only, with_topic, row_type)
            rows = None
            if whole:
                recs = batch.decode_values(m, header) if values_only else \
                    self._decode(m, header, with_topic, row_type)
            elif kept is not None and kept[0] is seg and kept[1] == (
                    header.position, header.crc, mode):
                rows = kept[2]
            else:       # (with offsets, for values too)
                rows = self._decode(m, header, with_topic and not values_only, row_type)
        except CorruptLogError as exc:
            raise exc.with_path(seg.path) from None
        # baseOffset is outside the CRC (B-4): offsets are dense, so the
        # batch here must hold the offset the cursor expects, or the bytes
        # are damaged (G4: never return wrong offsets).
        if not header.base_offset <= cursor.offset <= header.last_offset or \
                cursor.base >= 0 and header.base_offset != cursor.base:
            raise CorruptLogError(
                f"batch holds offsets {header.base_offset}.."
                f"{header.last_offset} where offset {cursor.offset} "
                "belongs: baseOffset is not the expected next offset",
                seg.path, cursor.position)
        if rows is None:
            return header, recs, None
        oi = 2 if with_topic and not values_only else 0
        i = bisect.bisect_left(rows, cursor.offset, key=lambda r: r[oi])
        recs = rows[i:i + room]
        if values_only:
            recs = [r[3] for r in recs]
        if i + room < len(rows):
            cursor.kept = (seg, (header.position, header.crc, mode), rows)
            return header, recs, rows[i + room][oi]
        cursor.kept = None
        return header, recs, None

    def _decode(self, m, header, with_topic: bool, row_type) -> list:
        """The rows of the batch at ``header``: with this partition's topic
        and index (``row_type``), or plain (offset first)."""
        if with_topic:
            return batch.decode(m, header, self.topic, self.index, row_type)
        return batch.decode(m, header)

    def _locate(self, seg: Segment, offset: int, end: int,
                last_offset: int | None) -> int:
        """Byte position of the batch holding ``offset`` (or of the first
        batch after it) in ``seg``, through its checked sparse index."""
        idx, _ = with_fds(self._handles, f"read the indexes of {seg.path}",
                          lambda: self.indexes(seg, end, last_offset))
        return seg.locate(offset, end, idx)

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The first offset whose record has timestamp >= ``timestamp_ms``
        (EMFILE/ENFILE: as :meth:`fetch`)."""
        return with_fds(self._handles, f"look up a time in {self.name}",
                        lambda: self._offset_for_time(timestamp_ms))

    def _offset_for_time(self, timestamp_ms: int) -> int | None:
        self._part.check()
        st = self._part.state()
        cur = Cursor(st.log_start_offset)
        with self._rlock:
            bases = self._segment_bases(st)
            start_offset = None
            for b in bases:
                seg = self._reader(b)
                end = self._segment_end(seg, st)
                _, t = self.indexes(seg, end,
                                     self._sealed_last_offset(bases, b, st))
                if b == st.active_base:
                    seg_max = st.active_max_timestamp
                else:
                    seg_max = last_timestamp(t)      # T-3
                if seg_max >= timestamp_ms or seg_max < 0:
                    hit = _native.timeindex_lookup(t, timestamp_ms) if t else None
                    start_offset = b + hit[1] + 1 if hit else b
                    break
            if start_offset is None:
                return None
        cur.offset = max(start_offset, st.log_start_offset)
        while True:
            recs = self.fetch(cur, 1000)
            if not recs:
                return None
            for r in recs:
                if r[1] >= timestamp_ms:
                    return r[0]


    def indexes(self, seg: Segment, end: int, last_offset: int | None, *,
                locked: bool = False) -> tuple[bytes, bytes]:
        """``seg``'s checked (.index, .timeindex) (I-3), rebuilt when damaged
        and written back when this process may write; ``locked``: the caller
        holds the append lock. See :func:`pylog.index.checked_indexes`."""
        return checked_indexes(seg, end, last_offset, self._write_back[locked])

    def close(self) -> None:
        """Unmap every reader map."""
        with self._rlock:
            for seg in self._readers.values():
                seg.close()
            self._readers.clear()
