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

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .records import TopicPartition


class Delivery:
    """Handed-but-unfinished records of one consumer, as offsets per
    partition; positions themselves live in the consumer's ``cursors``
    ({TopicPartition: Cursor}, shared and changed in place)."""

    __slots__ = ("pending", "batch", "at", "loop_batch", "skip", "sought", "_cursors",
                 "_cursor_type")

    def __init__(self, cursors: dict[TopicPartition, Any],
                 cursor_type: Callable[[int, str | None], Any]) -> None:
        self._cursors = cursors
        self._cursor_type = cursor_type
        # TopicPartition -> first offset the latest poll handed (unfinished)
        self.pending: dict[TopicPartition, int] = {}
        # the Records the iterator hands out one at a time, and the index
        # of the one it handed last (finished once the loop asks for more)
        self.batch: list[Any] | None = None
        self.at = 0
        # the batch a loop (the iterator, run) hands out, ``at`` the index
        # of the record in hand; ``skip``: partitions whose records the loop
        # passes over from now on, as Kafka's clients drop what they fetched
        # of a partition sought, revoked or paused: ``sought`` ones (sought,
        # lost, reset) no longer follow the position and nothing counts
        # them; paused ones went back to the position (see hold_back)
        self.loop_batch: list[Any] | None = None
        self.skip: set[TopicPartition] = set()
        self.sought: set[TopicPartition] = set()

    def next_poll(self) -> None:
        """A poll begins: everything handed before is finished."""
        if self.pending:
            self.pending = {}

    def handed(self, tp: TopicPartition, first_offset: int) -> None:
        """The running poll hands records of ``tp`` from ``first_offset``."""
        self.pending.setdefault(tp, first_offset)

    def handing(self, tp: TopicPartition, first_offset: int) -> bool:
        """Before a fetch moves ``tp``'s cursor from ``first_offset``: a
        failure from here on (a Ctrl-C inside the fetch, after the cursor
        moved, included) gives back from there. True when this call
        marked ``tp``: pass that to :meth:`not_handed` when the fetch gave
        nothing."""
        if tp in self.pending:
            return False
        self.pending[tp] = first_offset
        return True

    def not_handed(self, tp: TopicPartition, marked: bool) -> None:
        """The fetch :meth:`handing` announced gave no record of ``tp``."""
        if marked:
            self.pending.pop(tp, None)

    def hold(self, tp: TopicPartition, offset: int) -> None:
        """Keep ``tp`` unfinished from ``offset`` (a record handed before
        this poll whose handling goes on; see PollDriver.hold)."""
        first = self.pending.get(tp)
        if first is None or offset < first:
            self.pending[tp] = offset

    def forget(self, tp: TopicPartition) -> None:
        """``tp`` was sought, lost or reset: its position says all."""
        self.pending.pop(tp, None)
        if self.loop_batch is not None:
            self.sought.add(tp)
            self.skip.add(tp)

    def _rest(self, tp: TopicPartition) -> Any:
        """The first record of ``tp`` the running loop has yet to hand out
        (None: none, or not in a loop)."""
        if self.loop_batch is None or tp in self.skip:
            return None
        for r in self.loop_batch[self.at + 1:]:
            if r.partition == tp.partition and r.topic == tp.topic:
                return r
        return None

    def hold_back(self, tp: TopicPartition) -> None:
        """``tp`` was paused inside a loop: its records not handed yet go
        back (its position returns to the first of them) and the loop
        passes over them, so the next poll after resume() reads them."""
        r = self._rest(tp)
        if r is not None:
            cur = self._cursors.get(tp)
            if cur is not None and cur.offset > r.offset:
                self._cursors[tp] = self._cursor_type(r.offset, cur.topic_id)
        if self.loop_batch is not None:
            self.skip.add(tp)

    def position(self, tp: TopicPartition, offset: int) -> int:
        """Consumer.position of ``tp`` whose cursor is at ``offset``: inside
        a loop, the next record of ``tp`` it will hand out (the loop
        fetched ahead), as a Kafka client's iterator says."""
        r = self._rest(tp)
        return offset if r is None else int(r.offset)

    def committed(self, tp: TopicPartition, offset: int) -> None:
        """The application committed ``tp`` up to ``offset``: what lies
        before it is finished, what lies after it is not."""
        first = self.pending.get(tp)
        if first is None:
            return
        cur = self._cursors.get(tp)
        if cur is None or offset >= cur.offset:
            del self.pending[tp]
        elif offset > first:
            self.pending[tp] = offset

    def give_back(self) -> None:
        """The running poll failed (Ctrl-C, a refused record, an I/O
        error): nothing it fetched reaches the caller."""
        for tp, first in self.pending.items():
            cur = self._cursors.get(tp)
            if cur is not None:     # (back in the same incarnation of the topic)
                self._cursors[tp] = self._cursor_type(first, cur.topic_id)
        self.pending = {}

    def _floors(self, records: Iterable[Any]) -> dict[TopicPartition, int]:
        """First offset per partition among ``records`` (in offset order
        within each partition), partitions sought meanwhile left out."""
        out: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in out:
                out[tp] = r.offset
        for tp in self.sought:
            out.pop(tp, None)
        return out

    def _positions(self, unfinished: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Every positioned partition's offset, moved back to the first of
        its ``unfinished`` records where it has any."""
        pos = {tp: c.offset for tp, c in self._cursors.items()}
        pos.update((tp, o) for tp, o in unfinished.items() if tp in pos)
        return pos

    def finished(self) -> dict[TopicPartition, int]:
        """{tp: next offset after the finished records} for every positioned
        partition: what auto-commit, release and close() may commit."""
        if self.batch is not None:
            return self._positions(self._floors(self.batch[self.at:]))
        return self._positions(self.pending)

    def handed_positions(self) -> dict[TopicPartition, int]:
        """{tp: next offset after the handed records}: what commit() without
        offsets commits (the record the iterator is on counts as handed)."""
        if self.batch is not None:
            return self._positions(self._floors(self.batch[self.at + 1:]))
        return self._positions({})

    def abandoned(self, records: Iterable[Any]) -> None:
        """``records`` were handed (or fetched) but not finished: put each
        partition's position back on its first of them."""
        for tp, off in self._floors(records).items():
            cur = self._cursors.get(tp)
            if cur is not None and cur.offset > off:
                self._cursors[tp] = self._cursor_type(off, cur.topic_id)
            self.pending.pop(tp, None)

    # -- the two loops that hand records out one at a time ----------------------------
    def iterate(self, poll: Callable[..., list[Any]], closed: Callable[[], bool],
                idle_s: float | None = None) -> Iterator[Any]:
        """Consumer.__iter__: ``poll()`` batches, handed out one by one
        until ``closed()``, or until no record came for ``idle_s`` seconds
        (kafka-python's consumer_timeout_ms; None: never)."""
        from .errors import LogClosed
        idle_until = None if idle_s is None else time.monotonic() + idle_s
        while not closed():
            wait = 0.5
            if idle_until is not None:
                wait = min(wait, max(0.0, idle_until - time.monotonic()))
            try:
                recs = poll(timeout=wait)
            except LogClosed:
                return
            if recs and idle_s is not None:
                idle_until = time.monotonic() + idle_s
            elif idle_until is not None and time.monotonic() >= idle_until:
                return
            self.batch = self.loop_batch = recs
            self.at = 0
            skip = self.skip
            try:
                for i, r in enumerate(recs):
                    self.at = i
                    if skip and TopicPartition(r.topic, r.partition) in skip:
                        continue
                    yield r
                self.at = len(recs)
            finally:
                if self.batch is recs:
                    if self.at < len(recs):
                        self.abandoned(recs[self.at:])
                    self.batch = self.loop_batch = None
                    skip.clear()
                    self.sought.clear()
                    self.next_poll()
            if idle_s is not None and recs:
                idle_until = time.monotonic() + idle_s   # idle counts from the last record

    def run(self, poll: Callable[[], list[Any]], handler: Callable[[Any], object],
            commit: Callable[[dict[TopicPartition, int]], None] | None,
            commit_every: str, *, running: Callable[[], bool]) -> None:
        """Consumer.run: ``handler(record)`` for every record of ``poll()``
        while ``running()``; ``commit`` (None without a group) gets
        {tp: offset} of the records whose handler returned, after each
        record (``commit_every="record"``) or each batch (``"batch"``)."""
        from .errors import CommitFailedError, InvalidArgument, LogClosed
        if commit_every not in ("batch", "record"):
            raise InvalidArgument("commit_every must be 'batch' or 'record'")
        if not callable(handler):
            raise InvalidArgument(f"handler={handler!r} is not callable")
        per_record = commit_every == "record"
        while running():
            recs = poll()
            done: dict[TopicPartition, int] = {}
            n = 0
            skip, sought = self.skip, self.sought
            self.loop_batch = recs     # (so that a seek or pause in the handler is seen)
            try:
                for r in recs:
                    tp = TopicPartition(r.topic, r.partition)
                    self.at = n
                    if skip and tp in skip:
                        n += 1
                        continue
                    handler(r)
                    n += 1
                    if sought and tp in sought:
                        done.pop(tp, None)      # the seek says where tp stands
                        continue
                    done[tp] = r.offset + 1
                    if per_record and commit is not None:
                        commit({tp: r.offset + 1})
                        done.clear()
            except BaseException as exc:
                self.abandoned(recs[n:])
                self.loop_batch = None
                skip.clear()
                sought.clear()
                self.next_poll()        # those before it were finished
                if done and commit is not None:
                    try:
                        commit(done)
                    except (CommitFailedError, LogClosed):
                        pass    # moved away or closed: redelivered; raise the cause
                if isinstance(exc, LogClosed):
                    return      # closed from another thread: close() committed
                raise
            self.loop_batch = None
            skip.clear()
            sought.clear()
            self.next_poll()
            if done and commit is not None:
                try:
                    commit(done)
                except LogClosed:
                    return      # closed from another thread: close() committed
