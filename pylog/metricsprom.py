"""A log's metrics in Prometheus' text format (the optional extra
``pip install 'pylog[metrics]'``, which brings ``prometheus_client``):
``pylog metrics LOG --serve 127.0.0.1:9464`` serves them at ``/metrics``.

Every scrape takes a fresh :class:`pylog.metrics.MetricsSnapshot` of the
log (a collector, not values kept in this process): the counters are
those every process of the log adds to (FORMAT.rst P-10, P-11), so the
exporter runs in a process of its own and sees the producers' and
consumers' work. Counters are exported as counters; Prometheus computes
the rates (``rate(pylog_appended_records_total[1m])``).

Metric families (labels in braces):

- ``pylog_partition_start_offset``, ``pylog_partition_end_offset``,
  ``pylog_partition_bytes``, ``pylog_partition_segments``
  {topic, partition}: gauges.
- ``pylog_appended_records_total``, ``pylog_appended_bytes_total``,
  ``pylog_append_batches_total``, ``pylog_fetched_records_total``,
  ``pylog_fetches_total``, ``pylog_fsyncs_total`` {topic, partition}:
  counters.
- ``pylog_fsync_seconds``: a histogram of every fdatasync of the log's
  segments (all partitions), buckets as FORMAT.rst P-11 (``le`` is the
  bucket's exclusive upper bound).
- ``pylog_group_lag``, ``pylog_group_committed_offset`` {group, topic,
  partition}: gauges (no committed sample for a partition never
  committed); ``pylog_group_lag_from`` {group, topic, partition,
  pylog_group_lag_from}: where the lag counts from, a state set (one
  series for each of ``committed``, ``earliest``, ``latest``, ``none``,
  1 for the partition's, 0 for the others: the series stay the same when
  a first commit changes it);
  ``pylog_group_partition_owner_info`` {group, topic, partition, owner}: 1;
  ``pylog_group_members`` {group}: live members.
- ``pylog_share_records`` {group, topic, partition, state}: gauges for
  ``available``, ``acquired``, ``delayed``;
  ``pylog_share_archived_records_total`` {group, topic, partition}.
- ``pylog_metrics_errors``: parts of the log the last scrape could not read.
- ``pylog_up``: 1 when the scrape could read the log, 0 when it could not
  (its directory deleted or replaced, say): then it is the only sample,
  so no number read before is served as current.

Thread safety: a collector may be scraped from any thread; each scrape
reads the log as :meth:`pylog.Log.metrics` does. Durability: none.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .errors import MissingDependencyError, PylogError
from .metrics import FSYNC_BUCKET_BOUNDS_S, MetricsSnapshot

_log = logging.getLogger("pylog")
EXTRA_HINT = "pip install 'pylog[metrics]' (it brings prometheus_client)"


def _client() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError as exc:
        raise MissingDependencyError(f"the Prometheus exporter needs prometheus_client: "
                           f"{EXTRA_HINT}") from exc
    return prometheus_client


_P = ["topic", "partition"]
#: where a group's lag may count from (pylog.group.lag_from)
LAG_FROM = ("committed", "earliest", "latest", "none")


def families(snap: MetricsSnapshot) -> list[Any]:
    """The metric families of ``snap`` (prometheus_client's core types)."""
    core = _client().core
    gauge, counter = core.GaugeMetricFamily, core.CounterMetricFamily
    out: list[Any] = []

    def per_partition(cls: Any, name: str, doc: str, value: Callable[[Any], float]) -> None:
        fam = cls(name, doc, labels=_P)
        for p in snap.partitions:
            fam.add_metric([p.topic, str(p.partition)], value(p))
        out.append(fam)

    per_partition(gauge, "pylog_partition_start_offset", "First retained offset",
                  lambda p: p.start_offset)
    per_partition(gauge, "pylog_partition_end_offset",
                  "Offset the next record gets (high watermark)", lambda p: p.end_offset)
    per_partition(gauge, "pylog_partition_bytes", "Bytes of the segments on disk",
                  lambda p: p.bytes)
    per_partition(gauge, "pylog_partition_segments", "Segment files", lambda p: p.segments)
    per_partition(counter, "pylog_appended_records", "Records appended, every process",
                  lambda p: p.appended_records)
    per_partition(counter, "pylog_appended_bytes", "Batch bytes appended, every process",
                  lambda p: p.appended_bytes)
    per_partition(counter, "pylog_append_batches", "Batches appended, every process",
                  lambda p: p.append_batches)
    per_partition(counter, "pylog_fetched_records",
                  "Records fetched by consumers, every process", lambda p: p.fetched_records)
    per_partition(counter, "pylog_fetches", "Fetches that gave a consumer records",
                  lambda p: p.fetches)
    per_partition(counter, "pylog_fsyncs", "fdatasyncs of the partition's segments",
                  lambda p: p.fsync.count)

    hist = core.HistogramMetricFamily(
        "pylog_fsync_seconds", "Latency of fdatasyncs of the log's segments")
    cumulative, buckets = 0, []
    for bound, n in zip(FSYNC_BUCKET_BOUNDS_S, snap.fsync.buckets):
        cumulative += n
        buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
    hist.add_metric([], buckets, sum_value=snap.fsync.total_s)
    out.append(hist)

    # (where the lag counts from is a family of its own: a label of the
    # lag's would change, making a new series, at a partition's first commit)
    labels = ["group", "topic", "partition"]
    lag = gauge("pylog_group_lag", "Records the group has yet to read", labels=labels)
    committed = gauge("pylog_group_committed_offset", "The group's committed offset",
                      labels=labels)
    lag_from = core.StateSetMetricFamily(
        "pylog_group_lag_from", "Where the group's lag counts from: its committed "
        "offset, or its auto_offset_reset for a partition never committed", labels=labels)
    owner = gauge("pylog_group_partition_owner_info", "The member reading the partition",
                  labels=["group", "topic", "partition", "owner"])
    members = gauge("pylog_group_members", "Live members of the group", labels=["group"])
    for g in snap.groups:
        members.add_metric([g.group], g.members)
        for gp in g.partitions:
            key = [g.group, gp.topic, str(gp.partition)]
            lag.add_metric(key, gp.lag)
            lag_from.add_metric(key, {s: s == gp.lag_from for s in LAG_FROM})
            if gp.committed is not None:
                committed.add_metric(key, gp.committed)
            if gp.owner is not None:
                owner.add_metric(key + [gp.owner], 1)
    out += [lag, committed, lag_from, owner, members]

    share = gauge("pylog_share_records", "Records of a share group by state",
                  labels=["group", "topic", "partition", "state"])
    archived = counter("pylog_share_archived_records",
                       "Records the share group archived (rejected, delivery limit)",
                       labels=["group", "topic", "partition"])
    for sg in snap.share_groups:
        for sp in sg.partitions:
            key = [sg.group, sp.topic, str(sp.partition)]
            share.add_metric(key + ["available"], sp.available)
            share.add_metric(key + ["acquired"], sp.acquired)
            share.add_metric(key + ["delayed"], sp.delayed)
            if sp.archived is not None:
                archived.add_metric(key, sp.archived)
    out += [share, archived]
    out.append(gauge("pylog_metrics_errors", "Parts of the log this scrape could not read",
                     value=len(snap.errors)))
    return out


class LogCollector:
    """A prometheus_client collector: every ``collect()`` (scrape) calls
    ``take()`` for a fresh snapshot. A ``take()`` that raises a PylogError
    or an OSError (the log deleted, replaced, unreadable) makes the scrape
    ``pylog_up 0`` alone; one that succeeds, ``pylog_up 1`` and the log's
    families."""

    def __init__(self, take: Callable[[], MetricsSnapshot]) -> None:
        _client()
        self._take = take

    def collect(self) -> Iterator[Any]:
        up = _client().core.GaugeMetricFamily
        try:
            snap = self._take()
        except (PylogError, OSError) as exc:
            _log.warning("pylog metrics: cannot read the log: %s", exc)
            yield up("pylog_up", _UP_HELP, value=0)
            return
        yield up("pylog_up", _UP_HELP, value=1)
        yield from families(snap)


_UP_HELP = "1 when this scrape could read the log, 0 when not (then no other sample)"


def exposition(snap: MetricsSnapshot) -> bytes:
    """``snap`` in Prometheus' text format."""
    client = _client()
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(LogCollector(lambda: snap))
    data: bytes = client.generate_latest(registry)
    return data


#: Seconds a connection may take to send its request (and to take the
#: answer) before it is dropped: a client that connects and sends nothing
#: keeps a thread for this long, never the server.
CONNECTION_TIMEOUT_S = 10.0
#: Connections served at once; one more is closed as soon as it is
#: accepted (a scraper retries at its next interval), so clients that
#: connect and idle cannot make the exporter start a thread each.
CONNECTIONS_MAX = 32


def make_server(take: Callable[[], MetricsSnapshot], host: str, port: int,
                timeout_s: float = CONNECTION_TIMEOUT_S,
                connections_max: int = CONNECTIONS_MAX) -> Any:
    """A WSGI server (wsgiref) answering every path with the metrics of a
    fresh ``take()``; call ``serve_forever()`` and, from another thread,
    ``shutdown()``. Each connection is served in a daemon thread of its own
    and dropped after ``timeout_s`` seconds without progress, so an idle or
    slow client delays neither the other scrapes nor ``shutdown()``; past
    ``connections_max`` at once, a new connection is closed unanswered.
    OSError when the address is taken.

    Thread safety: ``take`` is called from the request threads, at once
    when scrapes overlap (:meth:`pylog.Log.metrics` is thread-safe)."""
    import socket
    import socketserver
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as wsgi_server

    client = _client()
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(LogCollector(take))

    class _Handler(WSGIRequestHandler):
        timeout = timeout_s     # StreamRequestHandler: the socket's timeout

        def log_message(self, format: str, *args: Any) -> None:
            pass            # no line per scrape on stderr

    class _Server(socketserver.ThreadingMixIn, WSGIServer):
        # wsgiref's server is IPv4 only; an IPv6 host ("::1") needs its family
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True   # server_close() joins none; exit kills stragglers
        _slots = threading.BoundedSemaphore(connections_max)

        def process_request(self, request: Any, client_address: Any) -> None:
            if not self._slots.acquire(blocking=False):
                self.shutdown_request(request)      # (full: closed, no thread)
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                self._slots.release()       # (no thread started to release it)
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self._slots.release()

        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], OSError):    # a client gone or timed out
                super().handle_error(request, client_address)

    return wsgi_server(host, port, client.make_wsgi_app(registry), server_class=_Server,
                       handler_class=_Handler)


__all__ = ["LogCollector", "families", "exposition", "make_server",
           "CONNECTION_TIMEOUT_S", "CONNECTIONS_MAX", "EXTRA_HINT"]
