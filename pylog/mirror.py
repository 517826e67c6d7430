"""Mirror a local log to an Apache Kafka cluster, or a Kafka cluster into a
local log, continuously, with the real Kafka client (confluent-kafka, the
``kafka`` extra: ``pip install 'pylog[kafka]'``)::

    from pylog.mirror import Mirror
    with Mirror("data/events", "kafka-1:9092", topics="order-.*") as m:
        m.run()                       # until stop() (another thread) or Ctrl-C

``direction="to-kafka"`` (default; pylog.mirrortokafka): every committed
record of the matching local topics (read ``read_committed``: aborted
transactions are not mirrored) is produced to the Kafka topic of the same
name (created with as many partitions when missing) with its key, headers
and timestamp, by an idempotent producer; the mirror's position is the local
consumer group ``group_id``, committed only after Kafka acknowledged the
records, so ``pylog groups`` shows how far behind it is.

``direction="from-kafka"`` (pylog.mirrorfromkafka): the matching Kafka
topics are consumed in the Kafka consumer group ``group_id`` and appended
to the local topics of the same name; Kafka offsets are committed only
after the records were fdatasync'd locally.

Guarantees, both ways: at least once, per-partition order kept (the same
partition numbers when both sides have as many partitions, else Kafka's
murmur2 on the key); a broker outage only delays (backoff, then resume);
a mirror killed at any instant (SIGKILL) resumes from its committed offsets
and sends again at most what was in flight (to Kafka: at most
``max_in_flight`` records). To Kafka, what retention
deleted from the local log before it could be sent is counted in
``stats.skipped_by_retention`` and reported.

Thread safety: ``run()`` is called from one thread at a time; ``stop()``
from any thread (or a signal handler).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from . import mirrorfromkafka, mirrortokafka
from .errors import InvalidArgument
from .log import Log
from .log import open as open_log
from .mirrorfromkafka import FromKafka
from .mirrorstats import MirrorError, MirrorStats, Report, confluent_kafka, default_report
from .mirrortokafka import MAX_IN_FLIGHT_DEFAULT, MAX_IN_FLIGHT_MAX, ToKafka

__all__ = ["Mirror", "MirrorStats", "MirrorError", "DIRECTIONS"]

DIRECTIONS = ("to-kafka", "from-kafka")
#: How long one step of run() may block, so stop() is seen soon.
STEP_S = 0.2
CLOSE_TIMEOUT_S = 10.0


class Mirror:
    """A running mirror between the log ``log`` (a path, opened here and
    closed by :meth:`close`, or an open :class:`~pylog.Log`, left open) and
    the Kafka cluster at ``bootstrap_servers`` (``host:port[,host:port]``).

    - ``topics`` (``".*"``): a regex matched against whole topic names;
      topics created later that match are mirrored too.
    - ``direction``: ``"to-kafka"`` or ``"from-kafka"`` (module docstring).
    - ``group_id`` (``"pylog-mirror"``): the local consumer group (to
      Kafka) or the Kafka consumer group (from Kafka) holding the position.
    - ``max_in_flight`` (to Kafka only; default 10,000): at most this many
      records are sent and not yet acknowledged by Kafka and committed to
      the local group; at that many the mirror stops reading the log until
      acknowledgements come back. It bounds what a SIGKILL of the mirror
      sends twice, and the client's memory; too small a value lowers
      throughput (a round trip and a commit per ``max_in_flight`` records).
    - ``kafka_config``: extra librdkafka settings (``security.protocol``,
      ``sasl.*``, ...) given to the Kafka clients.
    - ``report``: called with a line of text for each thing a person
      should know (broker unreachable, topic created, records deleted by
      retention before they were sent); default: the ``pylog.mirror``
      logger.

    Raises MirrorError when confluent-kafka is missing, InvalidArgument for
    a bad direction, pattern, bootstrap string, ``kafka_config`` (not a
    mapping, or settings the Kafka client refuses) or ``max_in_flight``
    (not an int from 1 to 10,000,000, or given from Kafka), before
    anything is created on disk.
    """

    def __init__(self, log: str | os.PathLike[str] | Log, bootstrap_servers: str, *,
                 topics: str = ".*", direction: str = "to-kafka",
                 group_id: str = "pylog-mirror",
                 max_in_flight: int | None = None,
                 kafka_config: Mapping[str, Any] | None = None,
                 report: Report | None = None) -> None:
        if direction not in DIRECTIONS:
            raise InvalidArgument(f"mirror: direction={direction!r}; expected one of "
                                  f"{', '.join(DIRECTIONS)}")
        if not isinstance(bootstrap_servers, str) or not re.fullmatch(
                r"[^\s,:]+:\d{1,5}(,[^\s,:]+:\d{1,5})*", bootstrap_servers):
            raise InvalidArgument(f"mirror: bootstrap_servers={bootstrap_servers!r}; "
                                  "expected host:port[,host:port...]")
        try:
            re.compile(topics)
        except (re.error, TypeError) as exc:
            raise InvalidArgument(f"mirror: topics={topics!r} is not a regex: {exc}") from None
        if not isinstance(group_id, str) or not group_id:
            raise InvalidArgument(f"mirror: group_id={group_id!r}; expected a non-empty str")
        if max_in_flight is not None and (
                isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int)
                or not 1 <= max_in_flight <= MAX_IN_FLIGHT_MAX):
            raise InvalidArgument(f"mirror: max_in_flight={max_in_flight!r}; expected an "
                                  f"int from 1 to {MAX_IN_FLIGHT_MAX:,}")
        if max_in_flight is not None and direction != "to-kafka":
            raise InvalidArgument("mirror: max_in_flight applies to direction='to-kafka' "
                                  "only (from Kafka, each step's records are on disk and "
                                  "committed before the next step)")
        if kafka_config is not None and not isinstance(kafka_config, Mapping):
            raise InvalidArgument(f"mirror: kafka_config={kafka_config!r}; expected a "
                                  "mapping of librdkafka settings")
        ck = confluent_kafka()
        config = dict(kafka_config or {})
        # before the log is opened (and maybe created): a refused mirror
        # leaves nothing on disk
        if direction == "to-kafka":
            mirrortokafka.check_settings(ck, bootstrap_servers, config,
                                         max_in_flight or MAX_IN_FLIGHT_DEFAULT)
        else:
            mirrorfromkafka.check_settings(ck, bootstrap_servers, topics, group_id, config)
        self.direction = direction
        self.stats = MirrorStats()
        self._stop = threading.Event()
        self._owns_log = not isinstance(log, Log)
        # sync="never" from Kafka: each step ends in producer.flush(), which
        # fdatasyncs before the Kafka commit, so one sync per step suffices
        self.log: Log = open_log(log, sync="never") if not isinstance(log, Log) else log
        say = report or default_report
        try:
            args = (ck, self.log, bootstrap_servers, topics, group_id,
                    config, self.stats, say)
            self._half: ToKafka | FromKafka = (
                ToKafka(*args, max_in_flight=max_in_flight or MAX_IN_FLIGHT_DEFAULT)
                if direction == "to-kafka" else FromKafka(*args))
        except BaseException:
            if self._owns_log:
                self.log.close()
            raise
        self._closed = False

    def run(self, *, until_caught_up: bool = False, timeout: float | None = None) -> MirrorStats:
        """Mirror until :meth:`stop` is called; with ``until_caught_up``,
        also return once everything there is has been mirrored and
        committed; with ``timeout`` (seconds), return after that long
        anyway. Returns the stats. Raises MirrorError on a failure that
        waiting cannot mend."""
        if self._closed:
            raise MirrorError("mirror: run() after close()")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stop.is_set():
            if self._half.step(STEP_S) and until_caught_up:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        return self.stats

    def stop(self) -> None:
        """Make :meth:`run` return after its current step. Thread-safe."""
        self._stop.set()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Wait up to ``timeout`` seconds for records in flight, commit what
        was acknowledged, close the clients (and the log if the mirror
        opened it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._half.close(timeout)
        finally:
            if self._owns_log:
                self.log.close()

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
