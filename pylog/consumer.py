"""Consumer: subscribe or assign, poll, commit, seek, replay (SPEC §4, §5).

Delivery (G3): records of each owned partition come in offset order; the
position advances past what ``poll`` returned; committed offsets are the
next offset to read. What auto-commit, ``close()`` and ``run()`` commit is
only what the application finished (pylog.delivery states the rules), so a
crash, Ctrl-C or an exception redelivers the unfinished records: at least
once. A record a deserializer refuses stops its partition there
(DeserializationError, or the dead-letter topic). A group member returns
records only while its heartbeat lease holds (GroupMember.lease_until), so
a member stopped past its session timeout never returns records of a
partition another member has taken over.

Waiting and fetching: pylog.fetching (and pylog.polldriver, the same in
steps, for pylog.aio).

Rebalances (group members): the listener given to ``subscribe()`` is
called in the consumer's thread, from inside ``poll()`` and the other calls
that look at the group (pylog.rebalance states when and with what).
A subscribed topic that does not exist is not an error (it may be created
later; a pattern subscription expects that): a warning is logged once per
name, with a close existing name when there is one, and
``missing_topics()`` lists such names.

Thread safety: a Consumer is used by one thread at a time (as Kafka's);
``close()`` and ``wakeup()`` may be called from any thread.
"""

from __future__ import annotations

import difflib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import _native, heartbeat
from .assignors import STRATEGIES
from .config import validate_topic_name
from .consumerargs import (
    CONSUMER_INSTEAD,
    MAX_POLL_RECORDS_MAX,
    as_tps,
    assign_starts,
    check_options,
    check_start,
    commit_offsets,
    poll_timeout,
    topic_list,
)
from .deadletter import DeadLetters
from .delivery import Delivery
from .deserialize import RecordMaker
from .errors import (
    CommitFailedError,
    ForkedLogError,
    InvalidArgument,
    LogClosed,
    PartitionNotFound,
    PylogError,
    ReadOnlyLog,
    TopicNotFound,
    kafka_name_error,
    not_transferable,
)
from .fetching import TOPIC_REFRESH_S, Fetching
from .group import GroupMember
from .offsetreset import OffsetReset
from .partition import Cursor
from .positions import Positions
from .rebalance import Callback, Listeners, PollInterval
from .records import Record, TopicPartition
from .store import FORKS
from .txnview import ReadMemory

if TYPE_CHECKING:
    from .store import LogStore

_logger = logging.getLogger("pylog")
Deserializer = Callable[[Any], Any]


class Consumer(Positions, Fetching):
    """Reads records of subscribed or assigned partitions; create with
    :meth:`Log.consumer` (whose docstring lists every option and its
    default). See the module docstring for delivery, waiting, rebalances
    and thread safety."""

    def __init__(self, log: LogStore, *topics: str, group_id: str | None = None,
                 pattern: str | None = None, auto_offset_reset: str = "latest",
                 enable_auto_commit: bool = True, auto_commit_interval_ms: int = 5000,
                 session_timeout_ms: int = 10000, max_poll_records: int = 500,
                 max_poll_interval_ms: int = 300_000,
                 consumer_timeout_ms: float | None = None,
                 partition_assignment_strategy: str = "sticky",
                 key_deserializer: Deserializer | None = None,
                 value_deserializer: Deserializer | None = None,
                 client_id: str | None = None, dead_letter_topic: str | None = None,
                 listener: object | None = None,
                 isolation_level: str = "read_uncommitted") -> None:
        if isolation_level not in ("read_uncommitted", "read_committed"):
            raise InvalidArgument(f"isolation_level={isolation_level!r}; expected "
                                  "'read_uncommitted' or 'read_committed'")
        if partition_assignment_strategy not in STRATEGIES:
            # (checked without a group too: a typo is an error, not ignored)
            raise InvalidArgument(f"partition_assignment_strategy="
                                  f"{partition_assignment_strategy!r}; expected one of "
                                  f"{STRATEGIES}")
        # read_committed reads stop at the last stable offset and skip
        # aborted transactions (pylog.txnview.TxnView, per fetch)
        self.isolation_level = isolation_level
        self._read_committed = isolation_level == "read_committed"
        # kept from poll to poll (held-back batches, documents)
        self._txn_memory = ReadMemory()
        check_options(log, group_id, auto_offset_reset, enable_auto_commit,
                      auto_commit_interval_ms, session_timeout_ms, max_poll_records,
                      max_poll_interval_ms, consumer_timeout_ms,
                      key_deserializer, value_deserializer)
        self._dlq: DeadLetters | None = None
        if dead_letter_topic is not None:
            if log.readonly:
                raise ReadOnlyLog(f"dead_letter_topic={dead_letter_topic!r} on "
                                  f"{log.path}: the log is open read-only")
            self._dlq = DeadLetters(log, dead_letter_topic)
        self._log = log
        self._forks = FORKS[0]
        self.group_id = group_id
        self._auto_commit = enable_auto_commit and group_id is not None
        self._auto_commit_s = auto_commit_interval_ms / 1000.0
        self._next_auto_commit = time.monotonic() + self._auto_commit_s
        self._max_poll = max_poll_records
        self._idle_s = None if consumer_timeout_ms is None else consumer_timeout_ms / 1000.0
        self._closed = False
        self._woken = False          # wakeup() since the current poll began
        self._subscription: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._topics_resolved: set[str] = set()
        self._missing: set[str] = set()      # subscribed names not (yet) topics
        self._warned: set[str] = set()
        self._next_topic_refresh = 0.0
        self._manual = None
        self._cursors = {}
        self._committed_pos = {}
        # partitions a rebalance took while records the last poll returned
        # of them were still being handled (until the next poll): a
        # transaction must not commit those records' outputs without them
        self._lost_handed: set[TopicPartition] = set()
        # commit()'s hook that makes the committed records durable (M-10):
        # bound once, reading the offsets of the commit in progress, so the
        # per-record commit loop allocates no closure
        self._committing: Iterable[TopicPartition] = ()
        self._sync_committing = self._sync_committing_records
        self._delivery = Delivery(self._cursors, Cursor)
        self._records = RecordMaker(key_deserializer, value_deserializer, self._dlq,
                                    group_id, self._cursors)
        self._paused = set()
        self._listeners = Listeners(self)
        self._interval = PollInterval(max_poll_interval_ms)
        self._poll_thread: int | None = None
        # a group member's _owned() and _slots() are cached on the identity
        # of what they are computed from (GroupMember.owned is replaced,
        # never mutated, when it changes)
        self._owned_src: object = None
        self._owned_list: list[TopicPartition] = []
        self._slot_src: object = None
        self._slot = 0
        self._rr = 0
        self._member = None
        if group_id is not None:
            self._member = GroupMember(log, group_id,
                                       strategy=partition_assignment_strategy,
                                       session_timeout_ms=session_timeout_ms,
                                       client_id=client_id,
                                       auto_offset_reset=auto_offset_reset)
            heartbeat.register(log, self._member, self._interval)
        self._resets = OffsetReset(auto_offset_reset, group_id, self._member,
                                   log if self._read_committed else None)
        if topics or pattern:
            self.subscribe(list(topics), pattern=pattern, listener=listener)
        elif listener is not None:
            raise InvalidArgument("listener= needs topics or a pattern to subscribe to")

    # -- state ----------------------------------------------------------------
    def _check(self) -> None:
        if self._closed:
            raise LogClosed("consumer is closed")
        if FORKS[0] != self._forks:
            raise ForkedLogError(
                "this consumer was created before os.fork() and belongs to the "
                "parent process; open the log and create consumers after forking")
        self._log._check()

    # -- subscription ------------------------------------------------------------
    def subscribe(self, topics: str | Iterable[str] = (), pattern: str | None = None,
                  listener: object | None = None, *,
                  on_assign: Callback | None = None, on_revoke: Callback | None = None,
                  on_lost: Callback | None = None) -> None:
        """Subscribe to ``topics`` (a name or a list; a group shares their
        partitions) and/or a regex ``pattern`` matched against every topic
        name, including topics created later. Replaces the previous
        subscription.

        ``listener``: a rebalance listener object (kafka-python's
        ConsumerRebalanceListener: ``on_partitions_revoked(revoked)``,
        ``on_partitions_assigned(assigned)``, optional
        ``on_partitions_lost(lost)``); ``on_assign``, ``on_revoke``,
        ``on_lost``: confluent-kafka's callables ``(consumer, partitions)``.
        All default to None; see pylog.rebalance for when each is called.
        A topic that does not exist is accepted (see ``missing_topics()``)."""
        self._check()
        names = topic_list(topics)
        for t in names:
            validate_topic_name(t)
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise InvalidArgument(f"pattern {pattern!r} is not a regex: {exc}") from None
        if not names and pattern is None:
            raise InvalidArgument("subscribe needs topics or a pattern")
        if self._manual is not None:
            raise InvalidArgument("subscribe after assign(); call unsubscribe() first")
        self._listeners.set(listener, on_assign, on_revoke, on_lost)
        self._pattern = compiled if pattern is not None else None
        self._subscription = set(names)
        self._next_topic_refresh = 0.0
        self._refresh_topics(force=True)

    def unsubscribe(self) -> None:
        """Drop the subscription (or assignment); a group member commits
        what the application finished (with auto-commit), calls the
        listener's revoke and leaves its group; an exception of the
        listener is raised once that is done."""
        self._check()
        self._commit_quietly()
        error: Exception | None = None
        if self._member is not None:
            if self._member.joined and not self._listeners.running:
                try:
                    self._listeners.revoked(self._member.owned)
                except Exception as exc:    # leave all the same (as close()); raise after
                    error = exc
            self._member.leave(None)
        self._subscription = set()
        self._pattern = None
        self._topics_resolved = set()
        self._missing = set()
        self._manual = None
        self._cursors.clear()
        if error is not None:
            raise error

    def subscription(self) -> set[str]:
        """The subscribed topic names (not those a pattern matches)."""
        return set(self._subscription)

    def missing_topics(self) -> set[str]:
        """Subscribed topic names that do not exist (as of the last look,
        at most a second old): a misspelled name shows here, and polls
        return nothing of it until a topic of that name is created."""
        self._check()
        self._refresh_topics()
        return set(self._missing)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Consume exactly these partitions, without group membership;
        raises TopicNotFound / PartitionNotFound for one that does not exist.
        A confluent-kafka TopicPartition's ``offset`` is where it starts
        (OFFSET_BEGINNING, OFFSET_END, or an offset, as seek()); without
        one it starts at the committed offset or ``auto_offset_reset``."""
        self._check()
        given = list(partitions)
        tps = as_tps((given,))
        starts = assign_starts(given)
        for tp in tps:      # (validates, changing nothing yet)
            check_start(self._log.partition(*tp), tp, starts.get(tp), self._resets.policy)
        if self._subscription or self._pattern:
            raise InvalidArgument("assign after subscribe(); call unsubscribe() first")
        self._manual = tps
        for tp in [tp for tp in self._cursors if tp not in tps]:
            del self._cursors[tp]       # (in place: Delivery and RecordMaker share it)
        for tp, start in starts.items():
            if start == "beginning":
                self.seek_to_beginning(tp)
            elif start == "end":
                self.seek_to_end(tp)
            else:
                self.seek(tp, int(start))

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer currently owns / was assigned."""
        self._check()
        if self._manual is not None:
            return set(self._manual)
        self._sync_group(force=True)
        return set(self._owned())

    def _owned(self) -> list[TopicPartition]:
        if self._manual is not None:
            return self._manual
        if self._member is not None:
            owned = self._member.owned
            if owned is not self._owned_src:
                self._owned_list = sorted(owned)
                self._owned_src = owned
            return self._owned_list
        # no group: every partition of the subscribed topics, counted now
        # (partitions added by this Log are seen at once; the Log caches the
        # counts for a second)
        out: list[TopicPartition] = []
        for t in sorted(self._topics_resolved):
            try:
                n = self._log.partitions_for(t)
            except TopicNotFound:
                continue
            out.extend(TopicPartition(t, p) for p in range(n))
        return out

    def _refresh_topics(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_topic_refresh:
            return
        self._next_topic_refresh = now + TOPIC_REFRESH_S
        existing = set(self._log.topics())
        topics = {t for t in self._subscription if t in existing}
        self._missing = self._subscription - topics
        for t in self._missing - self._warned:
            self._warned.add(t)
            close = difflib.get_close_matches(t, sorted(existing), n=1)
            _logger.warning(
                "consumer%s: subscribed topic %r does not exist%s; poll returns "
                "nothing of it until it is created (consumer.missing_topics() "
                "lists such names)", f" group {self.group_id!r}" if self.group_id else "",
                t, f" (did you mean {close[0]!r}?)" if close else "")
        if self._pattern is not None:
            topics |= {t for t in existing if self._pattern.fullmatch(t)}
        self._topics_resolved = topics    # a new set: _owned() recomputes

    def _sync_group(self, force: bool = False) -> None:
        if self._manual is not None:
            return
        self._refresh_topics(force)
        member = self._member
        if member is None or self._listeners.running:
            return          # (no rebalance inside a rebalance callback)
        if self._interval.exceeded() and member.joined:
            self._leave_lost()
        listeners = self._listeners
        listeners.begin()
        gained, lost = member.tick(self._topics_resolved, self._positions_for,
                                   force=force,
                                   on_revoke=listeners.revoked_later
                                   if listeners.wants_revoke else None)
        if member.joined:
            self._interval.joined()
        pending = self._delivery.pending
        for tp in lost:
            if tp in pending:
                self._lost_handed.add(tp)
            self._cursors.pop(tp, None)
            self._committed_pos.pop(tp, None)
            self._delivery.forget(tp)
            self._paused.discard(tp)
        for tp in gained:
            self._cursors.pop(tp, None)   # re-read the committed offset
            self._delivery.forget(tp)
        # (raises a callback's exception, the revoke one's included, once
        # the move is done and the state above matches it)
        listeners.moved(lost if member.rejoined else (), gained)

    def _leave_lost(self) -> None:
        """The application did not poll within max_poll_interval_ms: leave
        the group without committing (as Kafka's member does), so the
        partitions go to members that poll; this one rejoins at its next
        look at the group."""
        assert self._member is not None
        lost = set(self._member.owned)
        self._lost_handed.update(tp for tp in lost if tp in self._delivery.pending)
        self._member.leave(None)
        self._interval.reset()
        self._interval.warn(self.group_id, lost)
        for tp in lost:
            self._cursors.pop(tp, None)
            self._committed_pos.pop(tp, None)
            self._delivery.forget(tp)
            self._paused.discard(tp)
        self._listeners.lost(lost)

    def _positions_for(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Offsets to commit when releasing ``tps`` in a rebalance."""
        if not self._auto_commit:
            return {}
        finished = self._delivery.finished()
        out = {tp: finished[tp] for tp in tps
               if tp in finished and self._committed_pos.get(tp) != finished[tp]}
        self._sync_for_commit(out)
        return out

    def _sync_committing_records(self) -> None:
        self._sync_for_commit(self._committing)

    def _sync_for_commit(self, offsets: Iterable[TopicPartition]) -> None:
        """Offsets must not outlive the records they point past (power loss),
        nor the dead-letter copies of records they skip."""
        if self._dlq is not None:
            self._dlq.flush()
        for tp in offsets:
            try:
                part = self._log.partition(tp.topic, tp.partition)
            except (TopicNotFound, PartitionNotFound):
                continue    # deleted: no records to outlive (the commit decides)
            part.sync_for_commit()

    # -- polling (the fetching itself: pylog.fetching) ----------------------------
    def _poll(self, timeout: float, max_records: int | None,
              values_only: bool) -> list[Any]:
        self._check()
        if max_records is None:
            max_records = self._max_poll
        elif isinstance(max_records, bool) or not isinstance(max_records, int) \
                or not 1 <= max_records <= MAX_POLL_RECORDS_MAX:
            raise InvalidArgument(f"max_records={max_records!r}; expected an int in "
                                  f"[1, {MAX_POLL_RECORDS_MAX}]")
        if not self._subscription and self._pattern is None and self._manual is None:
            raise InvalidArgument("poll before subscribe() or assign()")
        if self._listeners.running:
            raise InvalidArgument("poll() inside a rebalance listener callback; "
                                  "return from it first")
        self._poll_thread = threading.get_ident()
        member = self._member
        if member is not None:
            member.idle()
            if self._manual is None and member.joined and self._interval.exceeded():
                self._leave_lost()
        self._delivery.next_poll()      # what the last poll handed is finished
        if self._lost_handed:
            self._lost_handed = set()
        try:
            return self._in_poll(self._poll_owned, timeout, max_records, values_only)
        except PylogError as exc:
            if not isinstance(exc, LogClosed) and self._log._closed:
                # the log was closed by another thread under this poll: its
                # metadata or files went away mid-call; say so, not "I/O error"
                raise LogClosed(f"log {self._log.path} was closed during poll()") from exc
            raise

    def _poll_owned(self, timeout: float, max_records: int, values_only: bool) -> list[Any]:
        """_poll's fetch, inside Fetching._in_poll: the records of
        partitions this member still owns."""
        slices: list[Any] = []
        recs = self._poll_loop(timeout, max_records, values_only, slices)
        if recs and self._manual is None and self._member is not None \
                and time.monotonic() > self._member.lease_until:
            recs = self._still_owned(recs, slices)
        return recs

    def poll(self, timeout: float | None = None, max_records: int | None = None, *,
             timeout_ms: int | None = None) -> list[Record]:
        """Return up to ``max_records`` (default: the consumer's
        ``max_poll_records``) records as a list of Record, waiting up to
        ``timeout`` seconds, or kafka-python's ``timeout_ms`` milliseconds
        (not both; default 0: no wait), for the first one. Unlike
        kafka-python's, the result is a list, not {TopicPartition: list}."""
        return self._poll(poll_timeout(timeout, timeout_ms), max_records, False)

    def poll_values(self, timeout: float | None = None, max_records: int | None = None, *,
                    timeout_ms: int | None = None) -> list[Any]:
        """Like poll() but returns only values (no Record objects): the fast
        path for consumers that need nothing else."""
        return self._poll(poll_timeout(timeout, timeout_ms), max_records, True)

    def wakeup(self) -> None:
        """Make a blocked poll() return early (from any thread)."""
        self._woken = True
        bell = self._log.doorbell()
        if bell is not None:
            # the slot a poll waits on: its topics' own, or slot 0 (L-3)
            _native.doorbell_ring(bell, self._slot)
            if self._slot:
                _native.doorbell_ring(bell, 0)

    def __iter__(self) -> Iterator[Record]:
        """Records one at a time until close(), or until none came for
        ``consumer_timeout_ms`` (default None: never); see pylog.delivery."""
        return self._delivery.iterate(self.poll, lambda: self._closed, self._idle_s)

    def run(self, handler: Callable[[Record], object], *, poll_timeout: float = 0.5,
            stop: threading.Event | None = None, commit_every: str = "batch") -> None:
        """Call ``handler(record)`` for every record until ``stop`` is set or
        the consumer is closed, committing (with a group) the records whose
        handler returned: ``commit_every="record"`` after each one,
        ``"batch"`` (default) after each poll's worth; polls wait
        ``poll_timeout`` seconds (default 0.5).

        A handler that raises (KeyboardInterrupt included) ends run with that
        exception: the records before it are committed, its record and the
        rest of the batch are not, and the position goes back to it, so it
        is delivered again (by this consumer's next poll, or after a
        restart): at least once.
        """
        commit = self.commit if self.group_id is not None else None
        self._delivery.run(lambda: self.poll(timeout=poll_timeout), handler, commit,
                           commit_every, running=lambda: not self._closed and
                           not (stop is not None and stop.is_set()))

    # -- commits ----------------------------------------------------------------------
    def commit(self, offsets: object = None, *, message: object = None,
               asynchronous: bool = False) -> None:
        """Commit ``offsets``, or without them the position after every
        record poll() returned (the iterator: up to the record it is on) of
        the owned partitions.

        ``offsets``: {TopicPartition: next offset to read}, whose values may
        be ints or OffsetAndMetadata (kafka-python; the metadata must be
        empty: pylog stores offsets only), or confluent-kafka's list of
        partitions carrying an ``offset`` (or ``(topic, partition, offset)``
        triples). ``message``: a Record, committing the offset after it
        (confluent-kafka). ``asynchronous`` is accepted and changes nothing:
        a commit is a local transaction, done when this returns.

        Durability: stored in the commit table (FORMAT.rst C-1 to C-5), the offsets
        survive a crash of this process once this returns; with
        ``sync="always"`` they are durable on return, in the other modes at
        the next checkpoint (every ``sync_interval_ms``), which first makes
        the records they point past durable (M-10). Raises
        CommitFailedError when a rebalance moved a partition away (SPEC §5),
        the member left its group for not polling within
        ``max_poll_interval_ms``, or, for a consumer that assign()ed its
        partitions (not a member), a live member of the group owns one of
        them (pylog.commitstore; as Kafka's coordinator).
        """
        self._check()
        if self.group_id is None:
            raise InvalidArgument("commit needs a group_id")
        clean = commit_offsets(offsets, message)
        grouped = self._member is not None and self._manual is None
        if grouped and self._member is not None and self._member.joined and \
                self._interval.exceeded():
            self._leave_lost()
            raise CommitFailedError(
                f"commit for group {self.group_id!r} refused: no poll() for over "
                f"max_poll_interval_ms={self._interval.limit_ms}, so this member "
                "left the group; poll again to rejoin (its records are delivered again)")
        if clean is None and grouped and self._lost_handed and \
                self._member is not None and not self._member.joined:
            # it left for not polling (above, or in an earlier call): the
            # records it handed are another member's to handle now
            raise CommitFailedError(
                f"commit for group {self.group_id!r} refused: this member left the "
                f"group (no poll() for over max_poll_interval_ms="
                f"{self._interval.limit_ms}) and lost {sorted(self._lost_handed)}; "
                "their records are delivered again; poll again to rejoin")
        if clean is None:
            owned = set(self._owned())
            clean = {tp: o for tp, o in self._delivery.handed_positions().items()
                     if tp in owned}
            if not grouped:     # (a member's group refuses a deleted topic's)
                clean = self._live(clean)
        if not clean:
            return
        raw = {(tp.topic, tp.partition): o for tp, o in clean.items()}
        if self._dlq is not None:
            self._dlq.flush()
        self._committing = clean
        try:
            if grouped and self._member is not None:
                if not self._member.joined:
                    self._sync_group(force=True)   # before its first poll: join
                self._member.commit(raw, self._sync_committing)
            else:
                self._log.meta.commit(self.group_id, raw,
                                      sync_records=self._sync_committing)
        finally:
            self._committing = ()
        self._committed_pos.update(clean)
        for tp, off in clean.items():     # the application finished these
            self._delivery.committed(tp, off)

    def _maybe_auto_commit(self) -> None:
        if not self._auto_commit:
            return
        now = time.monotonic()
        if now < self._next_auto_commit:
            return
        self._next_auto_commit = now + self._auto_commit_s
        self._commit_quietly()

    def _commit_quietly(self) -> None:
        """Auto-commit: the finished records' positions (pylog.delivery)."""
        if not self._auto_commit:
            return
        pending = {tp: o for tp, o in self._live(self._delivery.finished()).items()
                   if self._committed_pos.get(tp) != o}
        if not pending:
            return
        try:
            self.commit(pending)
        except CommitFailedError:
            pass    # the partition moved; its new owner resumes from the last commit

    if not TYPE_CHECKING:   # (to mypy a misspelt name stays an error)
        def __getattr__(self, name: str) -> Any:
            # only names not found the normal way land here: no cost elsewhere
            raise kafka_name_error(self, name, CONSUMER_INSTEAD,
                                   "a Kafka client's Consumer")

    def close(self, autocommit: bool = True, timeout: float | None = None) -> None:
        """Leave the group and release; with auto-commit (and ``autocommit``,
        default True) first commit what the application finished, never
        what it was only handed (pylog.delivery): a ``with`` block left by
        an exception or Ctrl-C loses nothing. A group member's revoke
        listener is called first when close() runs in the thread that
        polls. ``timeout`` is accepted (kafka-python) and changes nothing:
        close waits for no other process beyond ``pylog.open``'s
        ``metadata_timeout``. Idempotent; callable from any thread."""
        if self._closed:
            return
        self._woken = True
        error: BaseException | None = None
        try:
            if FORKS[0] == self._forks and not self._log._closed:
                member = self._member
                if member is not None and member.joined and member.owned and \
                        not self._listeners.running and \
                        self._poll_thread in (None, threading.get_ident()):
                    try:
                        self._listeners.revoked(member.owned)
                    except Exception as exc:   # still leave the group; raise it after
                        error = exc
                final = None
                if autocommit and self._auto_commit:
                    finished = self._live(self._delivery.finished())
                    final = {(tp.topic, tp.partition): o for tp, o in finished.items()}
                    self._sync_for_commit(finished)
                if member is not None:
                    heartbeat.unregister(self._log, member)
                    member.leave(final, for_good=True)
                if final and self.group_id is not None and \
                        (member is None or self._manual is not None):
                    # assign() with a group_id: not a member, so no leave
                    # commits for it (refused while a live member owns one)
                    try:
                        self._log.meta.commit(self.group_id, final)
                    except CommitFailedError as exc:
                        _logger.warning("consumer group %r: close() did not commit: "
                                        "%s", self.group_id, exc)
                if self._dlq is not None:
                    self._dlq.close()
        finally:
            self._closed = True
            self.wakeup()
        if error is not None:
            raise error

    def __reduce__(self) -> Any:
        raise not_transferable(self)

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
