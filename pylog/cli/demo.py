"""``pylog demo``: the story of pylog, live (see :mod:`pylog.demo`)."""

from __future__ import annotations

from . import args as cli_args
from .args import add_command


def register(subs) -> None:
    s = add_command(subs, "demo", "the story of pylog, live: producers, 3 groups, a crash",
                    "An order service records ORDER_PLACED events (with a traffic burst);\n"
                    "inventory, e-mail and fraud consumer groups, each in its own\n"
                    "process(es), drain them at their own pace; one consumer process is\n"
                    "killed with SIGKILL and restarted, and resumes from its committed\n"
                    "offset; a final count shows every event processed by every group.\n\n"
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
