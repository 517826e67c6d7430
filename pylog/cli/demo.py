"""``pylog demo``: the story of pylog, live (see :mod:`pylog.demo`)."""

from __future__ import annotations

from . import args as cli_args
from .args import add_command


def register(subs) -> None:
    s = add_command(subs, "demo", "the story of pylog, live: outbox, relay, 3 groups, crashes",
                    "An order service writes each order and its ORDER_PLACED event in one\n"
                    "SQLite transaction (an outbox row, with a traffic burst); the outbox\n"
                    "relay publishes the events exactly once; inventory (2 processes, stock\n"
                    "in SQLite, exactly once), e-mail (deduplicated) and fraud (at least\n"
                    "once) consume them. The relay and an inventory process are killed with\n"
                    "SIGKILL and restarted; a final count shows every order in the log once,\n"
                    "the stock exact and every order processed by every group.\n"
                    "Act 2: 3 e-mail worker processes share one queue (a share group);\n"
                    "provider failures are retried with delay, poison jobs parked in\n"
                    "emails.dlq, a hung worker SIGKILLed and its job taken by another.\n\n"
                    "examples:\n  pylog demo\n  pylog demo /tmp/shop-log --keep\n"
                    "  pylog demo --fast")
    s.add_argument("path", nargs="?", metavar="PATH",
                   help="log directory (default: a fresh temporary directory)")
    s.add_argument("--events", type=cli_args.EVENTS, metavar="N",
                   help="events in the burst")
    s.add_argument("--fast", action="store_true", help="a shorter run (~10 s)")
    s.add_argument("--keep", action="store_true",
                   help="keep a temporary log directory afterwards")
    s.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from ..demo import run_demo
    return run_demo(args.path, events=args.events, fast=args.fast,
                    keep=args.keep)
