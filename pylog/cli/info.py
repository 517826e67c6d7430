"""``pylog info``: topics, partitions, offsets, sizes, groups and lag.

A partition that cannot be described, or that failed when the log was
opened (its recovery found damage in the middle of the log), is named in a
``pylog: warning:`` line and the command exits 1; the segments are then
scanned, with progress on a terminal (:mod:`.progress`). Read-only: it
never changes the log.
"""

from __future__ import annotations

import sys

from ..group import lag_text
from ..table import human_bytes, table
from .args import add_command
from .progress import add_quiet, progress_for
from .runner import EXIT_OK, EXIT_PROBLEMS, emit, open_log


def register(subs) -> None:
    s = add_command(subs, "info", "topics, partitions, offsets, sizes, groups and lag",
                    "examples:\n  pylog info data/events\n  pylog info data/events --json")
    s.add_argument("path", metavar="PATH", help="log directory")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add_quiet(s)
    s.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    from ..errors import CorruptLogError
    from ..loginfo import log_info, raw_log_info
    try:
        log = open_log(args.path)
    except CorruptLogError as exc:
        # opening replays recovery, which refuses mid-log damage: describe
        # the log from its metadata and files instead
        _close_leaked_metadata(exc)
        with progress_for(args, "scanning") as progress:
            info = raw_log_info(args.path, progress=progress)
        info["errors"].insert(0, f"{exc} (figures read from the raw files)")
    else:
        with log:
            info = log_info(log)
            info["errors"].extend(_failed_partitions(log, info))
    code = EXIT_PROBLEMS if info["errors"] else EXIT_OK
    if args.json:
        return emit(args, info, None, code)
    _print_info(info)
    for e in info["errors"]:
        print(f"pylog: warning: {e}", file=sys.stderr)
    return code


def _failed_partitions(log, info) -> list:
    """One line per partition of ``info`` that is FAILED in ``log``: its
    figures come from the shared state, which its damaged files no longer
    back, so they must not pass for sound."""
    from ..errors import PylogError
    out = []
    for t in info["topics"]:
        for p in t["partition_info"]:
            try:
                why = log.partition(t["name"], p["partition"]).failed
            except PylogError:
                continue        # deleted since: log_info reported what it saw
            if why is not None:
                out.append(f"partition {t['name']}-{p['partition']} failed: {why}")
    return out


def _print_info(info) -> None:
    print(f"Log {info['path']}")
    print()
    if not info["topics"]:
        print("No topics.")
    else:
        rows = []
        for t in info["topics"]:
            for p in t["partition_info"]:
                rows.append([t["name"], p["partition"], p["start_offset"],
                             p["end_offset"], p["end_offset"] - p["start_offset"],
                             human_bytes(p["bytes"]), p["segments"]])
        print(table(rows, ["TOPIC", "PARTITION", "START", "END", "RECORDS",
                           "SIZE", "SEGMENTS"], right={1, 2, 3, 4, 5, 6}))
    print()
    if not info["groups"]:
        print("No consumer groups.")
    else:
        rows = []
        for g in info["groups"]:
            live = sum(1 for m in g["members"] if m["alive"])
            if not g["partitions"]:
                rows.append([g["group"], g["state"], live, "-", "-", "-", "-", g["lag"], ""])
            for p in g["partitions"]:
                rows.append([g["group"], g["state"], live, p["topic"],
                             p["partition"], _or_dash(p["committed"]), p["end_offset"],
                             p["lag"], lag_text(p.get("lag_from", "committed"))])
        print(table(rows, ["GROUP", "STATE", "MEMBERS", "TOPIC", "PARTITION",
                           "COMMITTED", "END", "LAG", "LAG FROM"], right={2, 4, 5, 6, 7}))


def _or_dash(v) -> object:
    return "-" if v is None else v


def _close_leaked_metadata(exc) -> None:
    """Work around Log.__init__ leaving its LMDB environment open when
    recovery raises (LMDB then refuses a second open in this process)."""
    from ..metadata import Metadata
    tb = exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if isinstance(getattr(obj, "meta", None), Metadata):
            try:
                obj.meta.close()
            except Exception:
                pass
            return
        tb = tb.tb_next
