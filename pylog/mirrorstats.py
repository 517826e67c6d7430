"""What the two halves of :class:`pylog.mirror.Mirror` share: its counters,
its error, its backoff and the import of the Kafka client.

Thread safety: a MirrorStats is written by the mirror's own thread; reading
its fields from another thread sees each one whole (ints), not a snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from .errors import PylogError

_logger = logging.getLogger("pylog.mirror")
#: librdkafka's own log lines (connection refused, ...) go here, not to stderr.
KAFKA_LOGGER = logging.getLogger("pylog.mirror.kafka")
# without logging configured they are dropped (error_cb reports what matters)
KAFKA_LOGGER.addHandler(logging.NullHandler())

#: The wait after a failure grows from BACKOFF_MIN_S, doubling, up to BACKOFF_MAX_S.
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0

Report = Callable[[str], None]


class MirrorError(PylogError):
    """Mirroring cannot go on: the Kafka client is missing, the cluster
    refused a topic, or a record cannot be written on the other side."""


@dataclass
class MirrorStats:
    """Counters of one Mirror since it was made.

    - ``records``: records the destination acknowledged (to Kafka: the
      broker's delivery report; from Kafka: fdatasync'd in the local log).
    - ``rewinds``: times the mirror went back to its last acknowledged
      offsets after a failed delivery (what was in flight is sent again:
      at least once).
    - ``skipped_by_retention``: records retention deleted from the local
      log before the mirror could send them (to Kafka only).
    - ``errors``: errors reported by the Kafka client (broker down, ...).
    - ``in_flight`` (to Kafka only): records sent to Kafka and not yet
      both acknowledged and committed to the local group, now; at most
      the Mirror's ``max_in_flight``, and at most what a kill resends.
    """
    records: int = 0
    rewinds: int = 0
    skipped_by_retention: int = 0
    errors: int = 0
    in_flight: int = 0


def default_report(message: str) -> None:
    """Where a Mirror says what happened unless told otherwise: the
    ``pylog.mirror`` logger, at WARNING."""
    _logger.warning("%s", message)


def confluent_kafka() -> ModuleType:
    """The confluent_kafka module, or MirrorError saying how to get it."""
    try:
        import confluent_kafka
        import confluent_kafka.admin  # noqa: F401  (ck.admin.AdminClient)
    except ImportError as exc:
        raise MirrorError(f"mirroring needs the Kafka client confluent-kafka ({exc}); "
                          "install it with: pip install 'pylog[kafka]'") from None
    return confluent_kafka


class Backoff:
    """Exponential backoff between BACKOFF_MIN_S and BACKOFF_MAX_S."""

    def __init__(self) -> None:
        self.delay_s = 0.0

    def next_s(self) -> float:
        """The next wait, longer than the previous one."""
        self.delay_s = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, self.delay_s * 2))
        return self.delay_s

    def reset(self) -> None:
        self.delay_s = 0.0


class RateLimitedReport:
    """Forwards a message to ``report`` unless the same one went out less
    than ``every_s`` ago (a broker that is down is reported every few
    seconds, not on every retry)."""

    def __init__(self, report: Report, every_s: float = 5.0) -> None:
        self._report = report
        self._every_s = every_s
        self._last: dict[str, float] = {}

    def __call__(self, message: str, now: float) -> None:
        if now - self._last.get(message, -1e18) >= self._every_s:
            self._last[message] = now
            self._report(message)
