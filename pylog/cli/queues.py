"""``pylog queues``: the share groups (work queues) of a log.

Opens the log read-only; the state is a lock-free snapshot of the shared
share-state files (or LMDB after a reboot), FORMAT.rst Q-*.
"""

from __future__ import annotations

import time

from .args import CliError, add_command
from .runner import emit, print_list


def register(subs) -> None:
    s = add_command(subs, "queues", "share groups: records available, acquired, "
                    "delayed, archived, per partition",
                    "examples:\n"
                    "  pylog queues data/events\n"
                    "  pylog queues data/events --json\n"
                    "  pylog queues data/events mailers redrive emails.dlq   (dry run)\n"
                    "  pylog queues data/events mailers redrive emails.dlq --execute")
    s.add_argument("path", metavar="LOG", help="the log directory")
    s.add_argument("group", metavar="GROUP", nargs="?", help="a share group")
    s.add_argument("action", nargs="?", choices=["redrive"],
                   help="redrive: dead letters of GROUP back to their topics")
    s.add_argument("dlq", metavar="DLQ_TOPIC", nargs="?", help="the dead-letter topic")
    s.add_argument("--execute", action="store_true",
                   help="redrive for real (default: show the plan)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_queues)


def cmd_queues(args) -> int:
    from .runner import open_log
    if args.group is not None:
        if args.action != "redrive" or not args.dlq:
            raise CliError("usage: pylog queues LOG GROUP redrive DLQ_TOPIC [--execute]")
        with open_log(args.path, readonly=not args.execute) as log:
            plan = log.redrive(args.group, args.dlq, execute=args.execute)
        verb = "redrove" if args.execute else "would redrive"
        tail = "" if args.execute else " (dry run: --execute to do it)"
        skipped = sum(1 for p in plan if "skipped" in p)
        tail += f"; {skipped} skipped" if skipped else ""
        return emit(args, plan, lambda: print(
            f"{verb} {len(plan) - skipped} records of {args.group!r} from {args.dlq}{tail}"
            + "".join(
                f"\n  {p['topic']}-{p['partition']} offset {p['offset']} ({p['reason']}, "
                f"{p['delivery_count']} deliveries)"
                + (f" skipped: {p['skipped']}" if "skipped" in p else "") for p in plan)))
    with open_log(args.path) as log:
        rows = log.share_groups()
    return print_list(
        args, rows, "No share groups.",
        lambda r: [r["group"], f"{r['topic']}-{r['partition']}", r["spso"],
                   r["end_offset"] if r["end_offset"] is not None else "-",
                   _available(r), _held(r), r["delayed"],
                   r["archived_total"] if r["archived_total"] is not None else "-",
                   r["lost_to_retention"] if r["lost_to_retention"] is not None else "-",
                   _age(r["oldest_unacknowledged_age_ms"])],
        ["GROUP", "PARTITION", "START", "END", "AVAILABLE", "ACQUIRED", "DELAYED",
         "ARCHIVED", "LOST", "OLDEST"], {2, 3, 4, 6, 7, 8})


def _available(r) -> str:
    """The count, and what holds the partition's window when it is full
    (nothing more is delivered until that record is done)."""
    b = r.get("blocked_by")
    if b is None:
        return str(r["available"])
    until = time.strftime("%H:%M:%S", time.localtime(b["until_ms"] / 1000))
    return f"{r['available']} (blocked: offset {b['offset']} {b['state']} until {until})"


def _held(r) -> str:
    held = r["held"]
    if not held:
        return str(r["acquired"])
    dead = sum(1 for h in held if h.get("owner_alive") is False)
    owners = len({h["owner_token"] for h in held})
    return f"{len(held)} ({owners} owners{f', {dead} of dead ones' if dead else ''})"


def _age(ms) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.1f}s"
