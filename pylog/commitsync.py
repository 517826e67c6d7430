"""M-10 for commit checkpoints (FORMAT.rst C-5): before committed offsets
reach LMDB, the records they point past are made durable, at a cost bounded
whatever the number of partitions the table holds commits of.

The commit table is shared by every process of the log, so a checkpoint
finds commits of partitions this process never opened. What each costs:

* the partitions this process wrote: flushed (their syncer, P-7), as every
  checkpoint did before;
* a committed partition this process has open: nothing when its durable
  mark (P-7) already covers the offset, else one fdatasync of its active
  segment through the handle it has (Reader.sync_for_commit);
* a committed partition it does not have open: its ``partition.state`` is
  mapped for the call (no Partition object, nothing kept); nothing more
  when the durable mark covers the offset, else one fdatasync of its
  active segment by path. At most :data:`FOREIGN_PER_CHECKPOINT` of them
  per checkpoint, taken in turn: the others' slots stay changed for a
  later checkpoint (or for their own process's, which has them open).

Thread safety: thread-safe (calls only read shared state and fdatasync;
the turn counter may skip or repeat a turn under a race, which costs
fairness, never durability). Durability: this is what makes the records
durable; it changes nothing else on disk.
"""

from __future__ import annotations

import os
from typing import Mapping

from .errors import InvalidArgument, TopicNotFound
from .handles import HandleCache
from .partition import Partition
from .segment import segment_path, sync_path
from .sharedstate import DELETED, SharedState

__all__ = ["CommitSync", "FOREIGN_PER_CHECKPOINT"]

# partitions not open in this process whose durability one checkpoint
# checks (a transient map each, an fdatasync when their mark lags)
FOREIGN_PER_CHECKPOINT = 64

TP = tuple[str, int]


class CommitSync:
    """The M-10 step of one Log's checkpoints; see the module docstring.
    ``partitions`` is the Log's open partitions by (topic, partition)
    (read, never changed), ``handles`` its handle cache."""

    def __init__(self, root: str, partitions: Mapping[TP, Partition],
                 handles: HandleCache | None) -> None:
        self._root = root
        self._partitions = partitions
        self._handles = handles
        self._turn = 0            # where the next checkpoint's foreign turn starts

    def __call__(self, committed: dict[TP, int]) -> set[TP]:
        """Make the records below each committed offset durable; return the
        partitions left for a later checkpoint (see the module docstring)."""
        for mine in list(self._partitions.values()):
            if not mine.readonly and not mine.closed:
                mine.flush()          # what this process wrote (P-7 marks)
        foreign: list[tuple[TP, int]] = []
        for tp, offset in committed.items():
            part = self._partitions.get(tp)
            if part is None or part.closed:
                foreign.append((tp, offset))
                continue
            mark = part.shared.durable_mark()
            if mark is not None and offset <= mark[2]:
                continue
            try:
                part.sync_for_commit()
            except (TopicNotFound, InvalidArgument):
                pass            # deleted since: its offsets go with it
        if not foreign:
            return set()
        foreign.sort()
        start = self._turn % len(foreign)
        turn = foreign[start:] + foreign[:start]
        self._turn = start + FOREIGN_PER_CHECKPOINT
        waiting = {tp for tp, _ in turn[FOREIGN_PER_CHECKPOINT:]}
        for tp, offset in turn[:FOREIGN_PER_CHECKPOINT]:
            if not self._sync_foreign(tp, offset):
                waiting.add(tp)
        return waiting

    def _sync_foreign(self, tp: TP, offset: int) -> bool:
        """M-10 for a partition this process does not have open; False when
        it could not be told now (its state is being published)."""
        directory = os.path.join(self._root, f"{tp[0]}-{tp[1]}")
        try:
            shared = SharedState(directory, True, None)
        except FileNotFoundError:
            return True             # deleted: its offsets go with it
        try:
            if shared.map is None:
                return True         # no state file: deleted (P-2)
            mark = shared.durable_mark()
            if mark is not None and offset <= mark[2]:
                return True
            vals = shared.read()
        finally:
            shared.close()
        if vals is None:
            return False            # a writer is publishing: next time
        if vals[0] == DELETED:
            return True
        # the active segment's published bytes; sealed ones are durable
        # since their roll (S-4)
        sync_path(self._handles, segment_path(directory, vals[1]))
        return True
