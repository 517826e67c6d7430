"""The ``pylog`` console script (SPEC §6): inspect and operate logs.

One module per group of subcommands (:mod:`.info`; :mod:`.check`: dump and
verify; :mod:`.console`: tail and produce; :mod:`.admin`: topics and groups;
:mod:`.queues`: share groups; :mod:`.top`: the live view; :mod:`.metrics`:
metrics and the Prometheus exporter; :mod:`.outbox`: the outbox relay;
:mod:`.mirror`: mirroring to and from Kafka;
:mod:`.demo`), each with a ``register(subs)`` that adds its parsers; all run
through :func:`.runner.run`, which maps errors to messages and exit codes.

Exit codes: 0 ok, 1 problems found (verify, dump, info), 2 usage or expected
errors (missing path, unknown topic, ...). Expected errors are one line on
stderr, ``pylog: error: ...``, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import admin, check, console, demo, info, metrics, mirror, outbox, queues, top
from .args import join_time_values
from .runner import EXIT_ERROR, run

MAIN_EPILOG = """\
examples:
  pylog demo                               the story: outbox, 3 groups, crashes
  pylog info data/events                   topics, offsets, sizes, group lag
  pylog info data/events --json
  pylog topics data/events create orders --partitions 4 --config retention_ms=86400000
  echo 'user-1:hello' | pylog produce data/events orders --key-separator :
  pylog tail data/events orders -f
  pylog groups data/events describe inventory-service
  pylog groups data/events reset inventory-service --to-datetime 1h --execute
  pylog queues data/events                 share groups (work queues)
  pylog top data/events                    live rates, lag and work queues (q quits)
  pylog metrics data/events --serve 127.0.0.1:9464   Prometheus exporter
  pylog outbox relay sqlite:///shop.db data/events   publish an outbox table
  pylog mirror data/events --bootstrap-servers kafka1:9092 --to-kafka
  pylog verify data/events
  pylog dump data/events/orders-0/00000000000000000000.log --records

exit status: 0 ok, 1 problems found (verify, dump, info), 2 usage or other errors.
"""

# in the order ``pylog --help`` lists them
COMMAND_GROUPS = (info, check, console, admin, queues, top, metrics, outbox, mirror, demo)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"pylog: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    p = _Parser(prog="pylog", description="Inspect and operate pylog logs "
                "(an embedded, durable, partitioned event log).",
                epilog=MAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"pylog {__version__}")
    subs = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for group in COMMAND_GROUPS:
        group.register(subs)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_time_values(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    return run(args.func, args)


__all__ = ["main", "build_parser"]
