"""Making one partition writer's appends durable: group commit through the
native syncer, flush, the fdatasync of a segment the handle cache closed
before its appends were durable, and the directory entries of a new
partition (FORMAT.rst G1, P-4 checkpoints, P-7).

With ``sync="always"`` an append returns only after ``fdatasync`` of the
segment; concurrent appenders share one fdatasync (group commit, in the
native syncer: one leads, the others wait without the GIL, and one sync
covers every append made before it began). The leader stores the durable
mark (P-7) into the partition's state map through the appender's pointer.
Sealed segments are fdatasync'd at their roll (S-4, pylog.writer), not
here. The directory entries of a new partition become durable before its
first durable append.

Thread safety: every method is thread-safe; :meth:`AppendSync.sync_through`
and :meth:`AppendSync.flush` are called without the writer lock (an
fdatasync never runs under it), the others say when they need it.
Durability: as each method states; nothing here writes segment data.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from . import _native, status
from .errors import LogClosed, LogFailedError, TopicNotFound
from .handles import FD_EXHAUSTED
from .segment import Segment, fsync_dir, parse_segment_name, sync_path, with_fds
from .sharedstate import State

# Least time between two recovery checkpoints written by flush (P-4); recovery
# rescans what was appended since the last one (a stale checkpoint is safe).
CHECKPOINT_INTERVAL_S = 1.0


class AppendSync:
    """The durability side of one :class:`pylog.writer.Writer`: it owns the
    native syncer (fdatasync of the active segment, shared by concurrent
    appenders), counts the group commits in flight (the state map is not
    dropped under them), and remembers a segment closed with appends not
    yet durable. ``part``, ``shared``, ``appender`` and ``wlock`` are the
    writer's.

    Thread safety: thread-safe (its own mutex for the count of syncs in
    flight; the writer lock for what it shares with the appends).
    Durability: see each method."""

    def __init__(self, part: Any, shared: Any, appender: Any, *, sync: str,
                 create: bool, handles: Any = None):
        self._part = part
        self._shared = shared
        self._wlock = shared.wlock
        self._appender = appender
        self._handles = handles
        self.name = part.name
        self.dir = part.dir
        self.sync_mode = sync
        self._syncer = _native.syncer()
        self._next_checkpoint = 0.0      # see flush
        self._dir_durable = not create   # see make_dir_durable
        # the path of a segment the handle cache closed with appends not yet
        # made durable (flush syncs it; under the writer lock)
        self.released_dirty: str | None = None
        # group commits in flight, counted under _mu: the state map the
        # appender points into is not dropped under them (the leader reads
        # the appender's pointer twice, see state_unmapped)
        self._mu = threading.Lock()
        self._syncing = 0

    def new_partition_files(self) -> None:
        """Recovery made the partition's first segment: its directory
        entries become durable before the first durable append, not now
        (creating a topic of 1000 partitions must not cost 1000 fsyncs)."""
        self._dir_durable = False

    def make_dir_durable(self) -> None:
        """fsync the partition directory and its parent once, before the
        first append this process makes durable (G1 in sync="always")."""
        if not self._dir_durable and self.sync_mode == "always":
            fsync_dir(self.dir)
            fsync_dir(os.path.dirname(self.dir))
        self._dir_durable = True

    def follow(self, seg: Segment | None, covered_next: int = 0) -> None:
        """Sync ``seg`` (the new active segment) from now on, or nothing
        (None: the offsets below ``covered_next`` count as durable, so a
        sync in flight returns instead of failing on a closed segment).
        The syncer duplicates the descriptor: on EMFILE the handle cache
        makes room, and if it cannot TooManyOpenFilesError is raised with
        nothing changed."""
        if seg is None:
            _native.syncer_set_fd(self._syncer, -1, covered_next, None)
            return
        with_fds(self._handles, f"open {seg.path} for group commit",
                 lambda: _native.syncer_set_fd(self._syncer, seg.fd, seg.base_offset,
                                               seg.path))

    def sync_before_release(self) -> bool:
        """Under the writer lock, before the handle cache closes the active
        segment in sync="always": make what was appended durable (an
        appender may be about to wait for it); False when the sync failed
        (the append's own sync reports it)."""
        a = self._appender
        return a.written_base < 0 or \
            _native.sync_through(self._syncer, a, a.written_next) == 0

    def closing(self) -> None:
        """The writer is closing its active segment (under the writer
        lock): sync nothing from now on. With sync="always" what was
        appended is made durable first (through the syncer's own
        descriptor) and counts as covered, as for the handle cache's release: a send that appended
        after the partition's closing flush began (another thread closing
        the Log) waits for its sync, and would otherwise raise LogClosed
        with its record in the log — stored twice when retried."""
        covered = 0
        if self.sync_mode == "always" and self.sync_before_release():
            covered = max(self._appender.written_next, 0)
        self.follow(None, covered)

    def state_unmapped(self) -> bool:
        """The partition's state map is about to be dropped (under the
        writer lock): unless a group commit is in flight (its leader writes
        the durable mark through the appender, P-7), the appender lets go
        of it; True then."""
        with self._mu:
            if self._syncing:
                return False
            self._appender.state = _native.ffi.NULL
        return True

    def sync_through(self, target_next: int) -> None:
        """Group commit: return once the offsets below ``target_next`` that
        this writer appended are durable. Concurrent callers share
        fdatasyncs: one leads, the others wait in the native syncer without
        the GIL (pl_sync_through), and one sync covers every append made
        before it began. Raises LogFailedError (and fails the partition)
        when fdatasync fails; every later call then fails too."""
        # The leader stores the durable mark (P-7) into the state map through
        # the appender's pointer after its fdatasync: holding the map's
        # pointer object keeps it mapped until then (close() only drops
        # references to it).
        # (mapped again if the handle cache dropped it: outside _mu, which
        # the cache's drop takes)
        pin = self._shared.ptr
        with self._mu:
            self._syncing += 1
            a = self._appender
            if a.state == _native.ffi.NULL and pin is not None and \
                    self._shared.ptr_if_mapped() is pin:
                # dropped and mapped again since this writer's last append:
                # the leader's durable mark (P-7) goes to the current map.
                # No drop can come between (it takes _mu), and an append's
                # set-up stores the same pointer.
                a.state = pin
        try:
            rc = _native.sync_through(self._syncer, a, target_next)
            del pin
        finally:
            with self._mu:
                self._syncing -= 1
        if rc == 0:
            return
        if rc == _native.E_STALE:            # closed under us
            self._part.check()
            raise LogClosed(f"partition {self.name} is closed")
        if rc == _native.E_VANISHED:         # L-6
            self._part.check_identity(f"the segment file of {self.name} was deleted")
            self._part.check()
        if rc == _native.E_NOFD:             # not sticky, as in C: nothing lost
            raise status.error(rc, f"fdatasync of {self.name}")
        if status.is_errno(rc):
            exc = OSError(-rc, os.strerror(-rc))
            self._part.fail(exc)
            raise LogFailedError(
                f"fdatasync of {self.name}: {exc.strerror} (errno {exc.errno}); "
                "records appended since the last successful sync may be "
                "lost") from exc
        self._part.check()
        raise status.error(rc, f"fdatasync of {self.name}")

    def flush(self, active: bool, written: tuple[int, int], written_next: int, *,
              checkpoint: bool) -> None:
        """Make everything the writer appended durable (``active``: it has
        an active segment; ``written``: (segment base, end) of its last
        batch, below ``written_next``), and advance the recovery checkpoint
        (P-4) so the next recovery scans less — at most every
        CHECKPOINT_INTERVAL_S, or now with ``checkpoint``: the checkpoint is
        an LMDB commit, which would cost a flush more than its fdatasync."""
        if written[0] < 0:
            return
        if active:
            self.sync_through(written_next)
        self._sync_released()
        now = time.monotonic()
        if not checkpoint and now < self._next_checkpoint:
            return
        self._next_checkpoint = now + CHECKPOINT_INTERVAL_S
        st = self._part.state()
        if st.active_base == written[0]:
            self._part.meta.set_checkpoint(self._part.topic, self._part.index, written[0],
                                           written[1], written_next)

    def _sync_released(self) -> None:
        """fdatasync the segment the handle cache closed while appends to
        it were not yet durable (sync="interval"/"never", see
        Writer._release): reopened by path for the call. A segment deleted
        meanwhile (retention, its topic) has nothing left to make durable."""
        with self._wlock:
            path, self.released_dirty = self.released_dirty, None
        if path is None:
            return
        try:
            st: State | None = self._part.state()   # published before the sync
        except TopicNotFound:
            st = None
        try:
            sync_path(self._handles, path)
        except OSError as exc:
            if exc.errno in FD_EXHAUSTED:
                with self._wlock:      # still to be made durable: keep it
                    if self.released_dirty is None:
                        self.released_dirty = path
                raise
            self._part.fail(exc)
            raise LogFailedError(
                f"fdatasync of {path}: {exc.strerror} (errno {exc.errno}); "
                "records appended since the last successful sync may be "
                "lost") from exc
        if st is not None and parse_segment_name(os.path.basename(path)) == st.active_base:
            # P-7, as the syncer's leader stores it: the end published
            # before the sync is durable after it
            self._shared.store_durable_mark(st.active_base, st.active_position,
                                            st.next_offset)
