"""What a consumer has handed to its application, and what the application
has finished: the commit rules of README "Consuming" (G3, at least once).

A record is *handed* when ``poll()`` returns it (or the iterator yields it)
and *finished* once the application moves past it:

- ``poll()`` / ``poll_values()``: at the next poll of the same consumer;
- ``for record in consumer``: when the loop asks for the next record;
- ``run(handler)``: when ``handler(record)`` returns.

Auto-commit, a rebalance's release and ``close()`` (also a ``with`` block
left by an exception, KeyboardInterrupt and SystemExit included) commit
finished records only. An explicit ``commit()`` without offsets commits
what was handed: the application says it is done with it. A record handed
but abandoned (the iterator left by ``break`` or an exception, a handler
that raised) puts the position back on it, so the same consumer gets it
again from its next poll.

Thread safety: none; a Delivery belongs to one Consumer, used by one thread
at a time.
"""

from __future__ import annotations

from .types import TopicPartition


class Delivery:
    """Handed-but-unfinished records of one consumer, as offsets per
    partition; positions themselves live in the consumer's cursors."""

    __slots__ = ("pending", "batch", "at")

    def __init__(self) -> None:
        # TopicPartition -> first offset the latest poll handed (unfinished)
        self.pending: dict[TopicPartition, int] = {}
        # the Records the iterator hands out one at a time, and the index
        # of the one it handed last (finished once the loop asks for more)
        self.batch: list | None = None
        self.at = 0

    def next_poll(self) -> None:
        """A poll begins: everything handed before is finished."""
        if self.pending:
            self.pending = {}

    def handed(self, tp: TopicPartition, first_offset: int) -> None:
        """The running poll hands records of ``tp`` from ``first_offset``."""
        self.pending.setdefault(tp, first_offset)

    def forget(self, tp: TopicPartition) -> None:
        """``tp`` was sought, lost or reset: its position says it all."""
        self.pending.pop(tp, None)

    def _floors(self, records) -> dict:
        """First offset per partition among ``records`` (in offset order
        within each partition)."""
        out: dict = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in out:
                out[tp] = r.offset
        return out

    def finished(self, cursors: dict) -> dict:
        """{tp: next offset after the finished records} for every positioned
        partition: what auto-commit, release and close() may commit."""
        pos = {tp: c.offset for tp, c in cursors.items()}
        if self.batch is not None:
            pos.update((tp, o) for tp, o in self._floors(self.batch[self.at:]).items()
                       if tp in pos)
        else:
            pos.update((tp, o) for tp, o in self.pending.items() if tp in pos)
        return pos

    def handed_positions(self, cursors: dict) -> dict:
        """{tp: next offset after the handed records}: what commit() without
        offsets commits (the record the iterator is on counts as handed)."""
        pos = {tp: c.offset for tp, c in cursors.items()}
        if self.batch is not None:
            pos.update((tp, o) for tp, o in self._floors(self.batch[self.at + 1:]).items()
                       if tp in pos)
        return pos

    def abandoned(self, records, cursors: dict, cursor_type) -> None:
        """``records`` were handed (or fetched) but not finished: put each
        partition's position back on its first of them."""
        for tp, off in self._floors(records).items():
            if tp in cursors and cursors[tp].offset > off:
                cursors[tp] = cursor_type(off)
            self.pending.pop(tp, None)
