"""``pylog metrics``: a log's metrics (pylog.metrics) as text, JSON, or
served in Prometheus' format (the ``pylog[metrics]`` extra).

Opens the log read-only. Without ``--serve`` it takes two readings
``--interval`` seconds apart (default 1) so that the rates cover that
interval, prints them and exits. With ``--serve HOST:PORT`` it answers
every HTTP request (``/metrics``) with a fresh reading until SIGINT or
SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from ..errors import FileVanishedError
from ..identity import Identity
from ..table import human_bytes, table
from .args import CliError, add_command
from .runner import EXIT_OK, EXIT_PROBLEMS, emit, forget_replaced_topics, open_log

MAX_INTERVAL_S = 3600


def register(subs) -> None:
    s = add_command(subs, "metrics", "rates, fsync latency, group lag, work queues; "
                    "or serve them to Prometheus",
                    "examples:\n"
                    "  pylog metrics data/events\n"
                    "  pylog metrics data/events --json --interval 5\n"
                    "  pylog metrics data/events --serve 127.0.0.1:9464   "
                    "(needs: pip install 'pylog[metrics]')")
    s.add_argument("path", metavar="LOG", help="the log directory")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between the two readings the rates come from "
                        "(default 1; 0: one reading, no rates)")
    s.add_argument("--serve", metavar="HOST:PORT",
                   help="serve Prometheus' text format at http://HOST:PORT/metrics")
    s.set_defaults(func=cmd_metrics)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) as (host, port)."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CliError(f"--serve {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return host, int(port)


def cmd_metrics(args) -> int:
    if not 0 <= args.interval <= MAX_INTERVAL_S:      # (NaN fails both)
        raise CliError(f"--interval {args.interval}: expected seconds from 0 to "
                       f"{MAX_INTERVAL_S}")
    if args.serve is not None:
        return _serve(args)
    with open_log(args.path) as log:
        first = log.metrics()
        snap = first
        if args.interval > 0:
            time.sleep(args.interval)
            snap = log.metrics(since=first)
    code = EXIT_PROBLEMS if snap.errors else EXIT_OK
    return emit(args, snap.to_dict(), lambda: _print(snap), code)


def _serve(args) -> int:
    from ..metricsprom import make_server
    host, port = parse_address(args.serve)
    with open_log(args.path) as log:
        # a log deleted or replaced under the exporter: the files it holds
        # open would still give the old numbers (pylog_up 0 instead)
        where = Identity(log.path, "log directory")
        try:
            def take():
                why = where.problem() or log.meta.identity_problem()
                if why is not None:
                    raise FileVanishedError(f"{why}; restart the exporter on the log "
                                            "there now")
                forget_replaced_topics(log)     # (a topic made again: the new one)
                return log.metrics()
            server = make_server(take, host, port)
        except OSError as exc:
            raise CliError(f"--serve {args.serve}: {exc.strerror or exc}") from None
        shown = f"[{host}]" if ":" in host else host
        print(f"serving the metrics of {log.path} at http://{shown}:"
              f"{server.server_address[1]}/metrics (Ctrl-C stops)", flush=True)
        def on_term(signum, frame):
            # shutdown() waits for serve_forever: not from its own thread
            threading.Thread(target=server.shutdown, daemon=True).start()

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.server_close()
    print("stopped", file=sys.stderr)
    return EXIT_OK


def _rate(v) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _ms(v) -> str:
    return "-" if v is None else ("inf" if v == float("inf") else f"{v * 1000:.3f}")


def _print(snap) -> None:
    span = f"rates over {snap.interval_s:.2f} s" if snap.interval_s else "one reading: no rates"
    print(f"Log {snap.path}  ({span})")
    print()
    if not snap.partitions:
        print("No topics.")
    else:
        print(table([[p.topic, p.partition, p.start_offset, p.end_offset,
                      human_bytes(p.bytes), p.appended_records, _rate(p.append_rate),
                      p.fetched_records, _rate(p.fetch_rate), p.fsync.count]
                     for p in snap.partitions],
                    ["TOPIC", "PARTITION", "START", "END", "SIZE", "APPENDED", "APPEND/S",
                     "FETCHED", "FETCH/S", "FSYNCS"], right=set(range(1, 10))))
    f = snap.fsync
    print()
    if f.count:
        print(f"fsyncs: {f.count}  mean {_ms(f.mean_s)} ms  p50 < {_ms(f.quantile(0.5))} ms"
              f"  p99 < {_ms(f.quantile(0.99))} ms")
    else:
        print("fsyncs: 0")
    print()
    if not snap.groups:
        print("No consumer groups.")
    else:
        from ..group import lag_text
        print(table([[g.group, gp.topic, gp.partition,
                      "-" if gp.committed is None else gp.committed, gp.end_offset, gp.lag,
                      lag_text(gp.lag_from), gp.owner or "-"]
                     for g in snap.groups for gp in g.partitions],
                    ["GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "LAG FROM",
                     "OWNER"], right={2, 3, 4, 5}))
    if snap.share_groups:
        print()
        print(table([[s.group, f"{sp.topic}-{sp.partition}", sp.available, sp.acquired,
                      sp.delayed, "-" if sp.archived is None else sp.archived]
                     for s in snap.share_groups for sp in s.partitions],
                    ["SHARE GROUP", "PARTITION", "AVAILABLE", "ACQUIRED", "DELAYED",
                     "ARCHIVED"], right={2, 3, 4, 5}))
    for e in snap.errors:
        print(f"pylog: warning: {e}", file=sys.stderr)
