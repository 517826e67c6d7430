"""What a group consumer tells its application when partitions move: the
rebalance listener, and the poll-interval watchdog that makes a member
which stopped polling leave its group (as Kafka's max.poll.interval.ms).

Listener shapes (both may be given; the object's methods are called
first):

- kafka-python's ``ConsumerRebalanceListener``: an object with
  ``on_partitions_revoked(revoked)`` and ``on_partitions_assigned(assigned)``
  and optionally ``on_partitions_lost(lost)`` (Java's name; without it,
  lost partitions go to ``on_partitions_revoked``, as Java's default does);
- confluent-kafka's callables ``on_assign(consumer, partitions)``,
  ``on_revoke(consumer, partitions)``, ``on_lost(consumer, partitions)``
  (without ``on_lost``, ``on_revoke`` gets lost partitions, as confluent's).

Partitions move incrementally (Kafka's cooperative protocol, KIP-429):
*revoked* names only the partitions taken away, called in the consumer's
thread before they are released, so a commit made in it still succeeds;
*assigned* names only the partitions gained, after they are owned (a
``seek`` there sets where reading starts); *lost* names partitions the
member no longer owns because its membership expired (it missed
``session_timeout_ms``, or did not poll within ``max_poll_interval_ms``):
others may already read them, and a commit of them raises
CommitFailedError.

A callback that raises does not stop the rebalance: the partitions move
all the same (revoked ones are released, committing what auto-commit
would), the other callbacks of that move still run, and the first
exception is then raised from the call that looked at the group
(``poll()``, ``assignment()``, ...), as Kafka's clients do.

Thread safety: one Listeners per Consumer, used from that consumer's thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from .errors import InvalidArgument
from .records import TopicPartition

_logger = logging.getLogger("pylog")

Callback = Callable[[Any, list[TopicPartition]], None]


class ConsumerRebalanceListener:
    """Base class of a rebalance listener (kafka-python's name): override
    the methods you need; each gets a set of TopicPartition. Called from
    inside the consumer's ``poll()`` (and other group calls), in its thread.
    """

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Partitions about to be released; a commit here still succeeds."""

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Partitions newly owned; a seek here sets where reading starts."""

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        """Partitions lost with the membership; commits of them fail.
        Defaults to :meth:`on_partitions_revoked`, as Kafka's Java client."""
        self.on_partitions_revoked(lost)


class Listeners:
    """The listener object and callables of one consumer, and the guard that
    keeps a callback from starting a rebalance inside another."""

    def __init__(self, consumer: object) -> None:
        self._consumer = consumer
        self._listener: object | None = None
        self._on_assign: Callback | None = None
        self._on_revoke: Callback | None = None
        self._on_lost: Callback | None = None
        self.running = False        # a callback is running (no nested rebalance)
        self._error: Exception | None = None    # a callback's, for moved() to raise

    def set(self, listener: object | None, on_assign: Callback | None,
            on_revoke: Callback | None, on_lost: Callback | None) -> None:
        """Check and install what ``subscribe()`` was given."""
        if listener is not None and not any(
                callable(getattr(listener, m, None)) for m in
                ("on_partitions_revoked", "on_partitions_assigned", "on_partitions_lost")):
            raise InvalidArgument(
                f"listener={listener!r} has no on_partitions_revoked / "
                "on_partitions_assigned method (kafka-python's "
                "ConsumerRebalanceListener); for callables use on_assign=, "
                "on_revoke=, on_lost=")
        for name, fn in (("on_assign", on_assign), ("on_revoke", on_revoke),
                         ("on_lost", on_lost)):
            if fn is not None and not callable(fn):
                raise InvalidArgument(f"{name}={fn!r} is not callable")
        self._listener = listener
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost

    @property
    def wants_revoke(self) -> bool:
        """Whether revocations must be announced before partitions go."""
        return self._on_revoke is not None or \
            callable(getattr(self._listener, "on_partitions_revoked", None))

    def _call(self, method: str, fn: Callback | None,
              tps: Iterable[TopicPartition]) -> None:
        tps = set(tps)
        if not tps:
            return
        self.running = True
        try:
            m = getattr(self._listener, method, None)
            if callable(m):
                m(set(tps))
            elif method == "on_partitions_lost":
                m = getattr(self._listener, "on_partitions_revoked", None)
                if callable(m):
                    m(set(tps))
            if fn is not None:
                fn(self._consumer, sorted(tps))
        finally:
            self.running = False

    def revoked(self, tps: Iterable[TopicPartition]) -> None:
        self._call("on_partitions_revoked", self._on_revoke, tps)

    def revoked_later(self, tps: Iterable[TopicPartition]) -> None:
        """:meth:`revoked`, but an exception of the callback is kept for
        :meth:`moved` to raise: the partitions are released all the same.
        Raised here, it would abort the release, and the member would
        keep them (its heartbeats go on) while members that joined wait
        for them for good; Kafka's clients also finish the rebalance and
        then raise the callback's exception from poll()."""
        try:
            self.revoked(tps)
        except Exception as exc:
            self._keep(exc)

    def begin(self) -> None:
        """A look at the group begins: drop what a look that raised before
        its end kept (its exception was not the one raised)."""
        self._error = None

    def moved(self, lost: Iterable[TopicPartition],
              gained: Iterable[TopicPartition]) -> None:
        """After a look at the group: the lost callback, then the assigned
        one (each runs even if the other raises: the application hears of
        every move), then raise the first exception of this look's
        callbacks, the revoke callback's included."""
        for call, tps in ((self.lost, lost), (self.assigned, gained)):
            try:
                call(tps)
            except Exception as exc:
                self._keep(exc)
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _keep(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        else:       # (one exception reaches the application: log the others)
            _logger.error("rebalance listener of %r raised again: %r", self._consumer,
                          exc, exc_info=exc)

    def assigned(self, tps: Iterable[TopicPartition]) -> None:
        self._call("on_partitions_assigned", self._on_assign, tps)

    def lost(self, tps: Iterable[TopicPartition]) -> None:
        self._call("on_partitions_lost", self._on_lost or self._on_revoke, tps)


class PollInterval:
    """Kafka's max.poll.interval.ms: the longest a group member may go
    between two ``poll()`` calls (the time a poll itself blocks does not
    count) before it leaves its group."""

    def __init__(self, limit_ms: int, monotonic: Callable[[], float] = time.monotonic):
        self.limit_ms = limit_ms
        self._monotonic = monotonic
        self._returned: float | None = None   # when the last poll returned
        self.polling = False
        #: None, or whether the caller can never poll again (pylog.aio: its
        #: event loop closed): counted as exceeded at once, so that its
        #: background heartbeats stop and the member expires by its session
        self.ended: Callable[[], bool] | None = None

    def begin(self) -> None:
        self.polling = True

    def end(self) -> None:
        self.polling = False
        self._returned = self._monotonic()

    def joined(self) -> None:
        """The member joined its group: with no poll returned yet (it
        joined from start(), assignment() or a commit), the clock starts
        now, so a member that never polls stops its background heartbeats
        too (pylog.heartbeat)."""
        if self._returned is None and not self.polling:
            self._returned = self._monotonic()

    def exceeded(self) -> bool:
        """Whether the application has not polled for longer than the
        limit, or can poll no more (``ended``)."""
        if self.ended is not None and self.ended():
            return True
        if self.polling or self._returned is None:
            return False
        return (self._monotonic() - self._returned) * 1000.0 > self.limit_ms

    def reset(self) -> None:
        self._returned = None

    def warn(self, group_id: str | None, tps: Iterable[TopicPartition]) -> None:
        _logger.warning(
            "consumer group %r: no poll() for over max_poll_interval_ms=%d; "
            "this member left the group and lost %s (their records will be "
            "delivered again); poll more often, lower max_poll_records, or raise "
            "max_poll_interval_ms", group_id, self.limit_ms, sorted(tps))
