"""The segments of one partition as this process knows them, kept in memory
so that rolls and retention cost the same with 10 segments as with 10,000
and with any number of unrelated files in the directory (Kafka keeps its
segment list the same way; FORMAT.rst P-8).

The list is valid for one layout generation of ``partition.state`` (P-2),
which every roll, retention pass, ``delete_records`` and recovery bumps
when segments appear or go. A writer of this process that changes the
layout itself updates the list in place (:meth:`SegmentList.rolled`,
:meth:`SegmentList.dropped`); when another process changed it, the
generation differs and the next use lists the directory once.

What is kept per sealed segment: its size (its end, S-4: known at the roll,
else one ``stat`` when retention_bytes first needs it) and its final max
timestamp (T-3: known at the roll, else read once from its checked time
index by the caller).

Thread safety: not thread-safe; used under the partition's writer lock and
append lock (P-3), where the layout cannot change under it. Durability:
none, memory only.
"""

from __future__ import annotations

import os

from .segment import list_segment_bases, segment_path


class SegmentList:
    """Base offsets, sizes and max timestamps of one partition's segments,
    valid for :attr:`generation` (see the module docstring)."""

    def __init__(self, directory: str):
        self.dir = directory
        self.generation: int | None = None   # None: list on next use
        self._bases: list[int] = []          # ascending; the last is active
        self._sizes: dict[int, int] | None = None   # sealed; None: not read
        self._total = 0                      # sum of _sizes
        self._max_ts: dict[int, int] = {}    # sealed, T-3, where known

    def bases(self, st) -> list[int]:
        """Base offsets up to the active segment of the published state
        ``st``, ascending; the caller must not change the list. Lists the
        directory only when ``st``'s layout generation is not the list's."""
        if self.generation != st.generation or not self._bases \
                or self._bases[-1] != st.active_base:
            self._bases = [b for b in list_segment_bases(self.dir) if b <= st.active_base]
            self._sizes = None
            self._max_ts = {}
            self.generation = st.generation
        return self._bases

    def sealed_bytes(self) -> int:
        """Total size of the sealed segments (after :meth:`bases`)."""
        self._sealed_sizes()
        return self._total

    def size(self, base: int) -> int:
        """Size of sealed segment ``base`` (after :meth:`bases`)."""
        return self._sealed_sizes()[base]

    def _sealed_sizes(self) -> dict[int, int]:
        if self._sizes is None:
            sizes = {}
            for b in self._bases[:-1]:
                try:
                    sizes[b] = os.stat(segment_path(self.dir, b)).st_size
                except FileNotFoundError:
                    sizes[b] = 0
            self._sizes = sizes
            self._total = sum(sizes.values())
        return self._sizes

    def max_timestamp(self, base: int) -> int | None:
        """The final max timestamp of sealed segment ``base`` (T-3), or
        None when not known yet (see :meth:`set_max_timestamp`)."""
        return self._max_ts.get(base)

    def set_max_timestamp(self, base: int, max_ts: int) -> None:
        self._max_ts[base] = max_ts

    def rolled(self, generation: int, sealed: int, size: int, max_ts: int,
               new_base: int) -> None:
        """This process sealed segment ``sealed`` (``size`` bytes, final max
        timestamp ``max_ts``) and published ``new_base`` as the active one,
        moving the layout from ``generation`` to the next (S-4)."""
        if self.generation != generation or not self._bases or self._bases[-1] != sealed:
            self.generation = None
            return
        self._bases.append(new_base)
        if self._sizes is not None:
            self._sizes[sealed] = size
            self._total += size
        self._max_ts[sealed] = max_ts
        self.generation = generation + 1

    def dropped(self, generation: int, count: int) -> None:
        """This process published the layout after ``generation`` without
        the ``count`` oldest segments (P-5, P-6)."""
        if self.generation != generation:
            self.generation = None
            return
        for b in self._bases[:count]:
            if self._sizes is not None:
                self._total -= self._sizes.pop(b, 0)
            self._max_ts.pop(b, None)
        del self._bases[:count]
        self.generation = generation + 1

    def invalidate(self) -> None:
        """Forget the list (recovery rebuilt the partition): the next use
        lists the directory."""
        self.generation = None
