"""One topic-partition (FORMAT.rst P-*): a small facade over the modules
that do the work, each one lock domain, the way Kafka splits its log:

* :mod:`pylog.sharedstate` — ``partition.state``: the seqlocked committed
  end every process maps (P-2) and the append lock (P-3);
* :mod:`pylog.segment` — one segment's files, its recovery and the one
  "first valid batch after damage" search (S-*, P-4);
* :mod:`pylog.index` — index validation, rebuild and write-back (I-*, T-*);
* :mod:`pylog.recovery` — the recovery passes run on open (P-4, P-5);
* :mod:`pylog.writer` — appends, growth and roll, group commit, flush;
* :mod:`pylog.reader` — reader maps, fetch, wait_fetch and its GIL/doorbell
  hand-off, time lookup;
* :mod:`pylog.retention` — deleting expired segments (P-5);
* :mod:`pylog.segmentlist` — the in-memory segment list rolls and
  retention decide from (P-8).

Files: ``<topic>-<n>/`` holds the segments and ``partition.state``. The
state file is not durable: after the last process closes or crashes, the
next opener rebuilds it by recovery (P-4).

State machine: OPEN -> FAILED (an I/O error or corruption; every later call
raises the recorded error until the log is reopened) and OPEN/FAILED ->
CLOSED.

Thread safety: every public method is thread-safe. Durability (G1): as the
writer's docstring says; appends are durable per the sync mode when they
return, and flush makes everything appended durable in any mode.
"""

from __future__ import annotations

import logging
import os
import time

from . import _native, cleanshutdown
from .config import TopicConfig
from .errors import (
    CorruptLogError,
    FileVanishedError,
    LogClosed,
    LogFailedError,
    LogOSError,
    PylogError,
    ReadOnlyLog,
    TopicNotFound,
)
from .identity import Identity, unlinked, vanished
from .reader import Cursor, Reader
from .recovery import recover_partition
from .retention import enforce_retention_locked
from .segment import list_segment_bases, segment_path
from .segmentlist import SegmentList
from .sharedstate import (
    DELETED,
    STATE_FILE,
    STATE_MAGIC,
    PartitionMeta,
    SharedState,
    State,
    writers_present,
)
from .topicdirs import read_id
from .writer import Writer

__all__ = ["Cursor", "Partition", "PartitionMeta", "State", "STATE_FILE",
           "STATE_MAGIC"]

_log = logging.getLogger("pylog")

OPEN, FAILED, CLOSED = "OPEN", "FAILED", "CLOSED"
_LIVE_CHECK_S = 1.0   # how often a read-only view looks for a live writer


class Partition:
    """One topic-partition; see the module docstring. The append and fetch
    entry points are the writer's and reader's own bound methods (no extra
    call on the hot paths); a read-only partition has no writer.

    Thread safety: every public method is thread-safe; each part keeps its
    own lock (SharedState.wlock and the append lock for writes, recovery and
    retention; the reader lock for reader maps). Durability: appends are
    durable per the sync mode when they return (Writer); :meth:`flush`
    makes everything appended durable; :meth:`close` flushes and records a
    recovery checkpoint (P-4)."""

    def __init__(self, root: str, topic: str, index: int, config: TopicConfig,
                 meta, *, sync: str = "always", readonly: bool = False,
                 create: bool = False, doorbell=None, lock_identity=None,
                 handles=None):
        self.topic = topic
        self.topic_id: str | None = None     # the incarnation (L-4), set by the store
        self.index = index
        self.name = f"{topic}-{index}"
        self.dir = os.path.join(root, self.name)
        self.config = config
        self.sync_mode = sync
        self.readonly = readonly
        self.meta = meta
        self.status = OPEN
        self._failure: BaseException | None = None
        self.memory_state: State | None = None   # readonly view, no writer
        self._next_live_check = 0.0
        # (token, liveness fd) naming the owning Log in the append lock (P-3)
        if lock_identity is None and not readonly:
            raise ValueError("a writable Partition needs the Log's lock identity")
        # (doorbell map, slot) of the log (L-3): appends ring it
        bell_ptr, bell_slot = None, 0
        if doorbell is not None and doorbell[0] is not None and not readonly:
            bell_ptr, bell_slot = _native.pointer(doorbell[0]), doorbell[1]
        # This process's blocked wait_fetch calls and the appends that wake
        # them (see pylog.reader)
        self._handoff = _native.Handoff() \
            if bell_ptr is not None and sync != "always" else None
        if create and not readonly:
            os.makedirs(self.dir, mode=0o755, exist_ok=True)
        elif not os.path.isdir(self.dir):
            raise CorruptLogError("partition directory is missing", self.dir)
        if os.path.islink(self.dir):
            raise CorruptLogError("partition directory is a symlink; refusing "
                                  "to follow it", self.dir)
        self.dir_identity = Identity(self.dir, "partition directory")   # L-6
        self.shared = SharedState(self.dir, readonly, lock_identity, handles)
        self.shared.same_incarnation = self._same_incarnation
        # P-8: for rolls and retention, under the writer and append locks
        self.segments = SegmentList(self.dir)
        # handles: the Log's HandleCache, which bounds the segments the
        # reader and writer keep open (pylog.handles)
        self.reader = Reader(self, self.shared, self._handoff, handles)
        self.writer = None if readonly else Writer(
            self, self.shared, sync=sync, bell_ptr=bell_ptr, bell_slot=bell_slot,
            handoff=self._handoff, create=create, handles=handles)
        self._bell_ptr = bell_ptr
        self.fetch = self.reader.fetch
        self.wait_fetch = self.reader.wait_fetch
        self.fetch_committed = self.reader.fetch_committed
        self.offset_for_time = self.reader.offset_for_time
        self.sync_for_commit = self.reader.sync_for_commit
        if self.writer is not None:
            self._appender = self.writer.appender
            # the writer's bound methods replace the refusing ones: one call
            # less per append on the hot path
            self.append = self.writer.append  # type: ignore[method-assign]
            self.append_one = self.writer.append_one  # type: ignore[method-assign]
            self.append_columns = self.writer.append_columns  # type: ignore[method-assign]
        else:
            self._appender = None

    # -- state machine -----------------------------------------------------
    def check(self) -> None:
        """Raise unless OPEN: LogClosed, or the recorded failure."""
        if self.status is OPEN:
            return
        if self.status is CLOSED:
            raise LogClosed(f"partition {self.name} is closed")
        cls = FileVanishedError if isinstance(self._failure, FileVanishedError) \
            else LogFailedError
        raise cls(
            f"partition {self.name} failed earlier and refuses further use "
            f"until the log is reopened: {self._failure}") from self._failure

    def fail(self, exc: BaseException) -> None:
        """Move to FAILED with ``exc`` (an I/O error or corruption, or L-6:
        the Log found the files gone)."""
        if self.status is OPEN:
            self.status = FAILED
            self._failure = exc
            _log.error("partition %s failed: %s", self.name, exc)

    @property
    def closed(self) -> bool:
        return self.status is CLOSED

    @property
    def failed(self) -> BaseException | None:
        return self._failure

    # -- read-only entry points of a writable partition ----------------------
    def append(self, records, *, compression: str | None = None):
        raise self._readonly_error()

    def append_one(self, timestamp_ms: int, key, value, hkey=None, hval=None):
        raise self._readonly_error()

    def append_columns(self, timestamp_ms: int, cols):
        raise self._readonly_error()

    def _readonly_error(self) -> Exception:
        self.check()
        return ReadOnlyLog(f"partition {self.name} is open read-only")

    # -- shared state ------------------------------------------------------
    def state(self) -> State:
        """The committed end of the partition, as all processes see it."""
        if self.memory_state is not None:
            if time.monotonic() < self._next_live_check or not self._writer_took_over():
                return self.memory_state
            self.memory_state = None
        ptr = self.shared.rptr       # (close() drops it: keep ours for the call)
        if ptr is None:
            self.check()
            raise CorruptLogError("partition state is missing", self.dir)
        vals = _native.state_read_ptr(ptr)
        if vals is None:
            vals = self.shared.repair()    # a writer died while publishing
        st = State(vals)
        if st.next_offset == DELETED:
            raise TopicNotFound(f"topic {self.topic!r} was deleted")
        return st

    def live_generation(self) -> int:
        """The layout generation (P-8) published now. ``state()`` of a
        read-only view is a copy in memory for up to _LIVE_CHECK_S, blind
        to a writer's retention or ``delete_records`` meanwhile; here the
        state file is looked at now (the view dropped if a writer took
        over). For error paths (P-12): costs a read of the file."""
        if self.memory_state is not None:
            self._next_live_check = 0.0
        return self.state().generation

    def _same_incarnation(self) -> bool:
        """Does the directory still carry this partition's topic id (L-4)?
        (Asked when a dropped state map is mapped again.)"""
        return self.topic_id is None or read_id(self.dir) == self.topic_id

    def _writer_took_over(self) -> bool:
        """Read-only view: has a writer opened the log and published the
        state since the view was computed? Checked at most every
        _LIVE_CHECK_S.

        A writer that recovered the partition bumped the generation. One
        that opened after a clean shutdown skipped recovery (P-9) and kept
        it: its appends move the published end past the view's, which is
        trusted only while a writer holds the log or when a writer closed
        it cleanly since (P-9), because a state file left by a crash may
        point past what survived (P-4)."""
        self._next_live_check = time.monotonic() + _LIVE_CHECK_S
        if not self.shared.attach() or not self.shared.has_magic():
            return False
        vals = self.shared.read()
        view = self.memory_state
        if vals is None or view is None:
            return False
        if vals[4] > view.generation:
            return True
        if vals[0] <= view.next_offset:
            return False
        root = os.path.dirname(self.dir)
        return writers_present(root) or \
            cleanshutdown.is_clean(self.dir, cleanshutdown.read_nonce(root))

    def initialized(self) -> bool:
        return self.shared.initialized()

    # -- recovery ----------------------------------------------------------
    def recover(self, *, unpublished_only: bool = False,
                clean: State | None = None) -> int:
        """Rebuild the shared state from the segments (P-4); return bytes cut.

        Run by the first process to open the log (nobody else has it open) and,
        with ``unpublished_only``, by any writable opener for a partition
        whose state was never published (a new partition). Scans from the
        recovery checkpoint to the last whole batch, truncates a torn tail,
        rebuilds the tail of the indexes (pylog.recovery). Mid-log damage (a
        bad batch followed by valid ones, G4) puts the partition in FAILED
        with CorruptLogError.

        ``unpublished_only`` decides under the append lock (P-3): another
        process may have published the state since the caller looked, and
        be appending through its map of the preallocated active segment,
        which a recovery would truncate under it (P-4).

        ``clean``: the state the last close left clean (P-9) whose files
        no longer match it; the segments must reach its end (P-12).
        """
        if self.readonly:
            self.memory_state = None
            if self.shared.attach() and self.shared.initialized() and \
                    writers_present(os.path.dirname(self.dir)):
                # a writer holds the log and published the state: a view
                # would give way to it at its first live check
                # (_writer_took_over), blind to the writer's appends until then
                return 0
            # A view computed in memory, the files untouched; damage fails
            # this partition only, so inspection of the rest goes on.
            try:
                loaded = recover_partition(self.dir, self.meta, self.topic,
                                           self.index, self.shared, write=False)
            except CorruptLogError as exc:
                self.fail(exc)
                return 0
            self.memory_state = loaded.state
            self._next_live_check = time.monotonic() + _LIVE_CHECK_S
            return loaded.truncated
        with self.shared.wlock:
            self.shared.lock()
            try:
                if unpublished_only and self.shared.has_magic():
                    return 0
                self.segments.invalidate()
                loaded = recover_partition(self.dir, self.meta, self.topic,
                                           self.index, self.shared, write=True,
                                           clean=clean)
                if loaded.created_first_segment:
                    assert self.writer is not None   # not readonly
                    self.writer.new_partition_files()
                return loaded.truncated
            except CorruptLogError as exc:
                self.fail(exc)
                return 0
            finally:
                self.shared.unlock()

    # -- durability --------------------------------------------------------
    def flush(self, *, checkpoint: bool = False) -> None:
        """Make everything appended so far durable, and advance the recovery
        checkpoint (P-4); see Writer.flush."""
        self.check()
        if self.writer is not None:
            try:
                self.writer.flush(checkpoint=checkpoint)
            except FileVanishedError:
                if self._deleted():     # by delete_topic: nothing left to keep
                    raise TopicNotFound(f"topic {self.topic!r} was deleted") from None
                raise

    # -- retention -----------------------------------------------------------
    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Delete whole sealed segments past retention_ms / retention_bytes;
        return how many were deleted."""
        self.check()
        if self.readonly:
            return 0
        with self.shared.wlock:
            self.shared.lock()
            try:
                return enforce_retention_locked(self, now_ms)
            finally:
                self.shared.unlock()

    # -- inspection ----------------------------------------------------------
    def describe(self) -> dict:
        """Offsets, bytes and segments (Log.describe_topic's PartitionInfo
        fields); a directory that cannot be listed raises LogOSError
        (LogPermissionError when access is refused)."""
        st = self.state()
        try:
            listed = list_segment_bases(self.dir)
        except OSError as exc:
            raise LogOSError.from_os_error(
                exc, f"list the segments of partition {self.name}") from None
        bases = [b for b in listed if b <= st.active_base]
        size = 0
        for b in bases:
            if b == st.active_base:
                size += st.active_position
            else:
                try:
                    size += os.stat(segment_path(self.dir, b)).st_size
                except FileNotFoundError:
                    pass
        return {"partition": self.index, "start_offset": st.log_start_offset,
                "end_offset": st.next_offset, "bytes": size,
                "segments": len(bases)}

    def check_identity(self, why: str | None = None) -> str | None:
        """L-6: why the directory or active segment this partition holds is
        no longer at its path (None: it is; ``why``: the caller knows); a
        vanished one fails the partition (every later append raises)."""
        writer = self.writer
        active = writer.active if writer is not None else None
        gone = unlinked(active)
        if gone is not None and writer is not None and active is not None and \
                self._rolled_past(active.base_offset):
            # another process rolled past it (this writer would notice at
            # its next append) and retention or delete_records deleted it
            # (P-5): no one's tampering. Let go of it: its descriptor would
            # keep its disk space taken for as long as this Log is open.
            # (The state is read only then: reading it maps it again, and
            # this runs for every open partition every second.)
            writer.let_go(active)
            gone = None
        why = self.dir_identity.problem() or gone or why
        if why is not None and not self.readonly and not self._deleted():
            self.fail(vanished(f"append to {self.name}", why))
        return why

    def _rolled_past(self, base: int) -> bool:
        """Whether the partition's active segment is now past ``base``
        (False when its state cannot be read)."""
        try:
            return int(self.state().active_base) > base
        except PylogError:
            return False

    def _deleted(self) -> bool:
        """Was the topic deleted (P-2)? Then its files went by delete_topic,
        not by someone else's hand: every use raises TopicNotFound already,
        and failing it would only report tampering that did not happen."""
        try:
            self.state()
        except TopicNotFound:
            return True
        except PylogError:
            return False
        return False

    def mark_deleted(self) -> None:
        """Tell every process the partition is gone (P-2) before its files go."""
        with self.shared.wlock:
            self.shared.lock()
            try:
                self.shared.publish(DELETED, 0, 0, -1, 0, 0)
            finally:
                self.shared.unlock()

    def close(self) -> None:
        """Flush (advancing the checkpoint) and release files. Idempotent."""
        if self.status is CLOSED:
            return
        try:
            if self.status is OPEN and self.writer is not None and \
                    self.writer.active is not None:
                try:
                    self.flush(checkpoint=True)
                except TopicNotFound:
                    pass
        finally:
            self.status = CLOSED
            if self.writer is not None:
                self.writer.close()
            self.reader.close()
            # The state map is not unmapped here: a thread may be reading it
            # through its pointer with the GIL released (state()). Dropping
            # our references unmaps it once the last such call returns.
            if self._bell_ptr is not None:
                _native.release(self._bell_ptr)
                self._bell_ptr = None
            self.shared.close()
