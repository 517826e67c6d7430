"""The ``pylog`` console script (SPEC §6): inspect and operate logs.

Exit codes: 0 ok, 1 problems found (verify, dump), 2 usage or expected
errors (missing path, unknown topic, ...). Expected errors are one line on
stderr, ``pylog: error: ...``, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import sys
import time

from . import cli_args
from .cli_args import CliError, parse_config, parse_time
from .table import human_bytes, table

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


# ---------------------------------------------------------------------------
# formatting helpers
# ---------------------------------------------------------------------------

def iso_ms(ms) -> str:
    if ms is None or ms < 0:
        return "-"
    try:
        return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc) \
            .isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def print_json(obj) -> None:
    from .verify import jsonable
    print(json.dumps(jsonable(obj), indent=2, sort_keys=False))


# ---------------------------------------------------------------------------
# opening logs
# ---------------------------------------------------------------------------

def require_log(path: str) -> str:
    """``path`` if it holds a log; a permission problem raises
    LogPermissionError (never "not a log")."""
    from .errors import LogNotFound
    from .store import check_log_dir
    if not path:
        raise CliError("the log PATH is empty")
    try:
        check_log_dir(os.path.abspath(path), f"open {path}")
    except LogNotFound:
        if not os.path.exists(path):
            raise CliError(f"{path}: no such file or directory") from None
        raise CliError(f"{path} is not a pylog log (meta/ is missing)") from None
    return path


def open_log(path: str, readonly: bool = True, **kw):
    import pylog
    require_log(path)
    return pylog.open(path, readonly=readonly, **kw)


# ---------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------

def cmd_info(args) -> int:
    import pylog
    from .verify import log_info, raw_log_info
    try:
        log = open_log(args.path)
    except pylog.CorruptLogError as exc:
        # opening replays recovery, which refuses mid-log damage: describe
        # the log from its metadata and files instead
        _close_leaked_metadata(exc)
        info = raw_log_info(args.path)
        info["errors"].insert(0, f"{exc} (figures read from the raw files)")
    else:
        with log:
            info = log_info(log)
    if args.json:
        print_json(info)
        return EXIT_OK
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
                rows.append([g["group"], g["state"], live, "-", "-", "-", "-", g["lag"]])
            for p in g["partitions"]:
                rows.append([g["group"], g["state"], live, p["topic"],
                             p["partition"], p["committed"], p["end_offset"],
                             p["lag"]])
        print(table(rows, ["GROUP", "STATE", "MEMBERS", "TOPIC", "PARTITION",
                           "COMMITTED", "END", "LAG"], right={2, 4, 5, 6, 7}))
    for e in info["errors"]:
        print(f"pylog: warning: {e}", file=sys.stderr)
    return EXIT_PROBLEMS if info["errors"] else EXIT_OK


def _close_leaked_metadata(exc) -> None:
    """Work around Log.__init__ leaving its LMDB environment open when
    recovery raises (LMDB then refuses a second open in this process)."""
    from .metadata import Metadata
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


# ---------------------------------------------------------------------------
# dump
# ---------------------------------------------------------------------------

def cmd_dump(args) -> int:
    from .verify import dump_index, dump_segment
    path = args.segment
    if not path:
        raise CliError("the SEGMENT path is empty")
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CliError(f"{path} is a directory; dump takes a segment file "
                       "(<topic>-<partition>/<base offset>.log)")
    if path.endswith((".index", ".timeindex")):
        d = dump_index(path)
        if args.json:
            d["problems"] = [p.to_dict() for p in d["problems"]]
            print_json(d)
        else:
            print(f"Dumping {path} ({d['kind']}, {len(d['entries'])} entries)")
            for e in d["entries"]:
                print("  " + "  ".join(f"{k}: {v}" for k, v in e.items()))
        for p in d["problems"] if not args.json else []:
            print(f"pylog: problem: {p}", file=sys.stderr)
        return EXIT_PROBLEMS if d["problems"] else EXIT_OK
    d = dump_segment(path, records=args.records, values=args.values)
    if d["not_a_segment"]:
        raise CliError(f"{path} is {d['not_a_segment']}; dump takes a segment "
                       "(<topic>-<partition>/<base offset>.log), .index or "
                       ".timeindex file")
    problems = d["problems"]
    if args.json:
        out = dict(d)
        out["problems"] = [p.to_dict() for p in problems]
        print_json(out)
    else:
        base = d["base_offset"]
        print(f"Dumping {path}")
        print(f"Segment base offset: {base if base is not None else 'unknown (not a segment file name)'}, "
              f"size: {d['size']} bytes, valid end: {d['valid_end']}, "
              f"batches: {len(d['batches'])}")
        by_pos = {}
        for p in problems:
            by_pos.setdefault(p.position, []).append(p)
        printed = set()
        for b in d["batches"]:
            for pos in sorted(k for k in by_pos if k is not None and k < b["position"]
                              and k not in printed):
                for p in by_pos[pos]:
                    print(f"!! position {pos}: {p.message}")
                printed.add(pos)
            print(f"baseOffset: {b['base_offset']} lastOffset: {b['last_offset']} "
                  f"count: {b['count']} position: {b['position']} size: {b['size']} "
                  f"firstTimestamp: {b['first_timestamp']} maxTimestamp: "
                  f"{b['max_timestamp']} codec: {b['codec']} producerId: "
                  f"{b['producer_id']} producerEpoch: {b['producer_epoch']} "
                  f"baseSequence: {b['base_sequence']} isTransactional: "
                  f"{str(b['is_transactional']).lower()} isControl: "
                  f"{str(b['is_control']).lower()} crc: {b['crc']:#010x} "
                  f"crcValid: {str(b['crc_valid']).lower()}")
            for p in by_pos.get(b["position"], []):
                print(f"!! position {b['position']}: {p.message}")
            printed.add(b["position"])
            for r in b.get("records", ()):
                line = (f"| offset: {r['offset']} timestamp: {r['timestamp']} "
                        f"key: {_show(r['key'])} headerKeys: "
                        f"[{','.join(_show(k) for k in r['header_keys'])}] "
                        f"valueSize: {r['value_size'] if r['value_size'] is not None else 'null'}")
                if args.values:
                    line += f" value: {_show(r['value'])}"
                print(line)
        for pos in sorted(k for k in by_pos if k is not None and k not in printed):
            for p in by_pos[pos]:
                print(f"!! position {pos}: {p.message}")
    for p in problems:
        print(f"pylog: problem: {p}", file=sys.stderr)
    if problems:
        print(f"pylog: {len(problems)} problem(s) found in {path}", file=sys.stderr)
    return EXIT_PROBLEMS if problems else EXIT_OK


def _show(text) -> str:
    return "null" if text is None else text


# ---------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------

class ProgressBar:
    """A progress bar on stderr (only used when stderr is a tty)."""

    def __init__(self, label: str = "verifying"):
        self.label = label
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if total < (8 << 20) or (now - self.last < 0.1 and done < total):
            return
        self.last = now
        width = 30
        frac = done / total if total else 1.0
        fill = int(frac * width)
        sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] "
                         f"{frac * 100:5.1f}% {human_bytes(done)}/{human_bytes(total)}")
        sys.stderr.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def cmd_verify(args) -> int:
    from .verify import verify_log
    require_log(args.path)
    bar = ProgressBar() if sys.stderr.isatty() and not args.json else None
    try:
        problems = verify_log(args.path, progress=bar)
    finally:
        if bar is not None:
            bar.finish()
    if args.json:
        print_json({"path": os.path.abspath(args.path), "ok": not problems,
                    "problems": [p.to_dict() for p in problems]})
    elif problems:
        print(f"{len(problems)} problem(s) found in {os.path.abspath(args.path)}:")
        for p in problems:
            pos = "-" if p.position is None else p.position
            print(f"  {p.file}  position {pos}: {p.message}")
    else:
        print(f"OK: {os.path.abspath(args.path)} is sound")
    return EXIT_PROBLEMS if problems else EXIT_OK


# ---------------------------------------------------------------------------
# tail / produce
# ---------------------------------------------------------------------------

def _record_out(r, fmt: str) -> str:
    from .verify import is_text, safe_text
    if fmt == "json":
        d = {"topic": r.topic, "partition": r.partition, "offset": r.offset,
             "timestamp_ms": r.timestamp_ms, "key": safe_text(r.key),
             "value": safe_text(r.value),
             "headers": {k: safe_text(v) for k, v in r.headers}}
        if not (is_text(r.key) and is_text(r.value)):
            d["escaped"] = True
        return json.dumps(d, ensure_ascii=False)
    key = "-" if r.key is None else safe_text(r.key)
    value = "null" if r.value is None else safe_text(r.value)
    return f"{r.partition}:{r.offset}\t{iso_ms(r.timestamp_ms)}\t{key}\t{value}"


class _Stop(Exception):
    pass


def _install_term_handler():
    def handler(signum, frame):
        raise _Stop()
    signal.signal(signal.SIGTERM, handler)


def cmd_tail(args) -> int:
    import pylog
    from pylog import TopicPartition
    follow = args.follow
    readonly = not (follow or args.group)
    log = open_log(args.path, readonly=readonly,
                   **({} if readonly else {"sync": "never"}))
    _install_term_handler()
    consumer = None
    try:
        info = log.describe_topic(args.topic)
        parts = list(range(info.partitions))
        if args.partition is not None:
            if not 0 <= args.partition < info.partitions:
                raise CliError(f"topic {args.topic!r} has {info.partitions} "
                               f"partitions; there is no partition {args.partition}")
            parts = [args.partition]
        tps = [TopicPartition(args.topic, p) for p in parts]
        if args.group:
            if args.partition is not None:
                raise CliError("--partition cannot be combined with --group "
                               "(the group assigns partitions)")
            consumer = log.consumer(args.topic, group_id=args.group,
                                    auto_offset_reset="earliest" if args.from_beginning
                                    else "latest", enable_auto_commit=True,
                                    auto_commit_interval_ms=1000)
            if args.since is not None or args.offset is not None:
                # join and learn the assignment before positioning
                deadline = time.monotonic() + 5.0
                while not consumer.assignment() and time.monotonic() < deadline:
                    consumer.poll(0.1, max_records=1)
                owned = sorted(consumer.assignment())
                _position(consumer, owned, args, explicit_only=True)
        else:
            consumer = log.consumer(enable_auto_commit=False)
            consumer.assign(tps)
            _position(consumer, tps, args, explicit_only=False)
        ends = {tp: log.partition(tp.topic, tp.partition).state().next_offset
                for tp in tps}
        count = 0
        started = time.monotonic()
        limit = args.max_records
        while True:
            recs = consumer.poll(timeout=0.5 if follow else 0.05, max_records=500)
            for r in recs:
                if not follow and r.offset >= ends.get(
                        TopicPartition(r.topic, r.partition), 0):
                    continue
                sys.stdout.write(_record_out(r, args.format) + "\n")
                count += 1
                if limit is not None and count >= limit:
                    break
            if recs:
                sys.stdout.flush()
            if limit is not None and count >= limit:
                break
            if not follow:
                if args.group:
                    owned = consumer.assignment()
                    done = all(consumer.position(tp) >= ends[tp] for tp in owned)
                    if not owned:   # still joining (or the group is full)
                        done = time.monotonic() - started > 5.0
                else:
                    done = all(consumer.position(tp) >= ends[tp] for tp in tps)
                if done and not recs:
                    break
        sys.stdout.flush()
        if args.group:
            consumer.commit()
    except (_Stop, KeyboardInterrupt):
        sys.stdout.flush()
    finally:
        if consumer is not None:
            try:
                consumer.close()
            except pylog.PylogError:
                pass
        log.close()
    return EXIT_OK


def _position(consumer, tps, args, explicit_only: bool) -> None:
    from pylog import TopicPartition
    if args.since is not None:
        ts = parse_time(args.since)
        found = consumer.offsets_for_times({tp: ts for tp in tps})
        ends = consumer.end_offsets(tps)
        for tp in tps:
            off = found.get(tp)
            consumer.seek(tp, ends[tp] if off is None else off)
    elif args.offset is not None:
        starts, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        for tp in tps:
            off = args.offset
            if off < 0:               # -N: N records before the end
                off = ends[tp] + off
            consumer.seek(tp, min(max(off, starts[tp]), ends[tp]))
    elif explicit_only:
        return
    elif args.from_beginning:
        consumer.seek_to_beginning(*tps)
    elif args.follow:
        consumer.seek_to_end(*tps)
    else:                               # like tail(1): the last N records
        starts, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(TopicPartition(*tp), max(starts[tp], ends[tp] - args.lines))


def cmd_produce(args) -> int:
    log = open_log(args.path, readonly=False, sync="never")
    n = 0
    try:
        if args.create and args.topic not in log.topics():
            log.create_topic(args.topic, partitions=args.partitions, exist_ok=True)
        info = log.describe_topic(args.topic)
        if args.partition is not None and not 0 <= args.partition < info.partitions:
            raise CliError(f"topic {args.topic!r} has {info.partitions} partitions; "
                           f"there is no partition {args.partition}")
        headers = []
        for h in args.header or ():
            k, sep, v = h.partition("=")
            if not sep:
                raise CliError(f"--header {h!r}: expected key=value")
            headers.append((k, v.encode()))
        producer = log.producer()
        sep = args.key_separator.encode() if args.key_separator else None
        stdin = sys.stdin.buffer
        try:
            for line in stdin:
                line = line.rstrip(b"\n").rstrip(b"\r")
                if not line and args.skip_empty:
                    continue
                key = None
                if sep is not None and sep in line:
                    key, line = line.split(sep, 1)
                producer.send(args.topic, line, key=key, headers=headers or None,
                              partition=args.partition)
                n += 1
        except KeyboardInterrupt:
            pass
        producer.flush()
        producer.close()
    finally:
        log.close()
    if not args.quiet:
        print(f"produced {n} record(s) to {args.topic}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------
# topics
# ---------------------------------------------------------------------------

def _topic_rows(info):
    return [[info.name, p.partition, p.start_offset, p.end_offset,
             p.end_offset - p.start_offset, human_bytes(p.bytes), p.segments]
            for p in info.partition_info]


def _print_topic(info) -> None:
    cfg = ", ".join(f"{k}={v}" for k, v in info.config.items())
    print(f"Topic: {info.name}  partitions: {info.partitions}  config: {cfg}")
    print(table(_topic_rows(info), ["TOPIC", "PARTITION", "START", "END", "RECORDS",
                                    "SIZE", "SEGMENTS"], right={1, 2, 3, 4, 5, 6}))


def _print_list(args, items: list, empty: str, row, headers: list, right: set) -> int:
    """A ``list`` action's output: JSON, a line when there is nothing, or a
    table of ``row(item)`` for each item."""
    if args.json:
        print_json(items)
    elif not items:
        print(empty)
    else:
        print(table([row(i) for i in items], headers, right=right))
    return EXIT_OK


def cmd_topics(args) -> int:
    import pylog
    action = args.action or "list"
    if action == "list":
        with open_log(args.path) as log:
            infos = [log.describe_topic(t) for t in log.topics()]
        return _print_list(
            args, infos, "No topics.",
            lambda i: [i.name, i.partitions,
                       sum(p.end_offset - p.start_offset for p in i.partition_info),
                       human_bytes(sum(p.bytes for p in i.partition_info)),
                       i.config.get("retention_ms"), i.config.get("compression") or "none"],
            ["TOPIC", "PARTITIONS", "RECORDS", "SIZE", "RETENTION_MS", "COMPRESSION"],
            {1, 2, 3, 4})
    if action == "describe":
        with open_log(args.path) as log:
            names = [args.name] if args.name else log.topics()
            infos = [log.describe_topic(n) for n in names]
        if args.json:
            print_json(infos if not args.name else infos[0])
            return EXIT_OK
        for i, info in enumerate(infos):
            if i:
                print()
            _print_topic(info)
        return EXIT_OK
    if not args.name:
        raise CliError(f"topics {action} needs a topic NAME")
    if action == "create":
        config = parse_config(args.config)
        with pylog.open(args.path) as log:
            if args.if_not_exists and args.name in log.topics():
                info = log.describe_topic(args.name)
                msg = f"topic {args.name} already exists"
            else:
                info = log.create_topic(args.name, partitions=1 if args.partitions
                                        is None else args.partitions, **config)
                msg = f"created topic {args.name} with {info.partitions} partition(s)"
    elif action == "delete":
        with open_log(args.path, readonly=False) as log:
            if args.if_exists and args.name not in log.topics():
                print(f"topic {args.name} does not exist; nothing deleted")
                return EXIT_OK
            log.delete_topic(args.name)
        if args.json:
            print_json({"deleted": args.name})
        else:
            print(f"deleted topic {args.name}")
        return EXIT_OK
    elif action == "alter":
        config = parse_config(args.config)
        if not config and args.partitions is None:
            raise CliError("topics alter needs --partitions N and/or --config key=value")
        with open_log(args.path, readonly=False) as log:
            if args.partitions is not None:
                log.create_partitions(args.name, args.partitions)
            info = log.alter_topic(args.name, **config) if config \
                else log.describe_topic(args.name)
        msg = f"altered topic {args.name}"
    else:   # pragma: no cover (argparse choices)
        raise CliError(f"unknown action {action!r}")
    if args.json:
        print_json(info)
    else:
        print(msg)
        _print_topic(info)
    return EXIT_OK


# ---------------------------------------------------------------------------
# groups
# ---------------------------------------------------------------------------

def cmd_groups(args) -> int:
    action = args.action or "list"
    if action == "list":
        with open_log(args.path) as log:
            groups = [log.describe_group(g) for g in log.groups()]
        return _print_list(
            args, groups, "No consumer groups.",
            lambda g: [g["group"], g["state"], sum(1 for m in g["members"] if m["alive"]),
                       ",".join(sorted({p["topic"] for p in g["partitions"]})) or "-",
                       g["lag"], g["retention_resets"]],
            ["GROUP", "STATE", "MEMBERS", "TOPICS", "LAG", "RETENTION RESETS"], {2, 4, 5})
    if not args.group:
        raise CliError(f"groups {action} needs a GROUP name")
    if action == "describe":
        with open_log(args.path) as log:
            if args.group not in log.groups():
                raise CliError(f"group {args.group!r} does not exist in {args.path}")
            g = log.describe_group(args.group)
        if args.json:
            print_json(g)
            return EXIT_OK
        print(f"Group: {g['group']}  state: {g['state']}  generation: "
              f"{g['generation']}  strategy: {g['strategy'] or '-'}  total lag: {g['lag']}")
        if g["retention_resets"]:
            print(f"Retention overtook this group {g['retention_resets']} time(s): "
                  f"{g['records_skipped_by_retention']} records were deleted before "
                  "it read them")
        print()
        print(table([[p["topic"], p["partition"], p["committed"], p["end_offset"],
                      p["lag"], p["retention_resets"], p["owner"] or "-"]
                     for p in g["partitions"]],
                    ["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "RET.RESETS",
                     "OWNER"], right={1, 2, 3, 4, 5}))
        if g["members"]:
            print()
            print(table([[m["member_id"], m["client_id"] or "-", m["host"], m["pid"],
                          "yes" if m["alive"] else "no",
                          " ".join(f"{tp[0]}-{tp[1]}" for tp in m["owned"]) or "-"]
                         for m in g["members"]],
                        ["MEMBER", "CLIENT", "HOST", "PID", "ALIVE", "PARTITIONS"],
                        right={3}))
        return EXIT_OK
    # reset
    targets = [(args.to_earliest, "earliest", None), (args.to_latest, "latest", None),
               (args.to_offset is not None, "offset", args.to_offset),
               (args.to_datetime is not None, "datetime", args.to_datetime)]
    chosen = [(to, v) for on, to, v in targets if on]
    if len(chosen) != 1:
        raise CliError("groups reset needs exactly one of --to-earliest, "
                       "--to-latest, --to-offset N, --to-datetime T")
    to, value = chosen[0]
    if to == "datetime":
        value = parse_time(value)
    with open_log(args.path, readonly=not args.execute) as log:
        if args.group not in log.groups() and args.topic is None:
            raise CliError(f"group {args.group!r} has no committed offsets; name "
                           "a --topic to create them")
        before = log.meta.group_offsets(args.group)
        plan = log.reset_group(args.group, to=to, value=value, topic=args.topic,
                               execute=args.execute)
    rows = [{"topic": tp.topic, "partition": tp.partition,
             "current": before.get((tp.topic, tp.partition)), "new": off}
            for tp, off in sorted(plan.items())]
    if args.json:
        print_json({"group": args.group, "executed": bool(args.execute),
                    "plan": rows})
        return EXIT_OK
    print(table([[r["topic"], r["partition"], r["current"], r["new"]] for r in rows],
                ["TOPIC", "PARTITION", "CURRENT", "NEW"], right={1, 2, 3}))
    if args.execute:
        print(f"Reset group {args.group}: {len(rows)} partition(s) committed.")
    else:
        print(f"Dry run: nothing changed. Re-run with --execute to reset "
              f"group {args.group}.")
    return EXIT_OK


# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(args.path, events=args.events, fast=args.fast,
                    keep=args.keep)


# ---------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------

MAIN_EPILOG = """\
examples:
  pylog demo                               the story: producers, 3 groups, a crash
  pylog info data/events                   topics, offsets, sizes, group lag
  pylog info data/events --json
  pylog topics data/events create orders --partitions 4 --config retention_ms=86400000
  echo 'user-1:hello' | pylog produce data/events orders --key-separator :
  pylog tail data/events orders -f
  pylog groups data/events describe inventory-service
  pylog groups data/events reset inventory-service --to-datetime 1h --execute
  pylog verify data/events
  pylog dump data/events/orders-0/00000000000000000000.log --records

exit status: 0 ok, 1 problems found (verify, dump), 2 usage or other errors.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"pylog: error: {message}\n")


def _sub(subs, name, help_, epilog, description=None):
    return subs.add_parser(name, help=help_, description=description or help_,
                           epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = _Parser(prog="pylog", description="Inspect and operate pylog logs "
                "(an embedded, durable, partitioned event log).",
                epilog=MAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"pylog {__version__}")
    subs = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = _sub(subs, "info", "topics, partitions, offsets, sizes, groups and lag",
             "examples:\n  pylog info data/events\n  pylog info data/events --json")
    s.add_argument("path", metavar="PATH", help="log directory")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_info)

    s = _sub(subs, "dump", "print the batches (and records) of a segment file",
             "Works on a bare segment file, without the log's metadata. Problems\n"
             "(bad CRC, broken framing, offset gaps, garbage) are reported with\n"
             "their byte position; the dump continues where it safely can and\n"
             "exits 1. Also decodes .index and .timeindex files.\n\n"
             "examples:\n"
             "  pylog dump data/events/orders-0/00000000000000000000.log\n"
             "  pylog dump orders-0/00000000000000000000.log --records --values\n"
             "  pylog dump 00000000000000000000.log --json | jq '.problems'\n"
             "  pylog dump orders-0/00000000000000000000.index")
    s.add_argument("segment", metavar="SEGMENT.log", help="segment file (.log, .index or .timeindex)")
    s.add_argument("--records", action="store_true", help="also print every record")
    s.add_argument("--values", action="store_true",
                   help="also print values (implies --records); text as is, "
                        "binary escaped (\\xNN)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_dump)

    s = _sub(subs, "verify", "check CRCs, offsets, indexes and metadata",
             "Checks every batch CRC and its framing, offset continuity inside and\n"
             "across segments, index entries against the log, and the LMDB\n"
             "metadata against the segments. Safe while other processes write\n"
             "(checks up to the committed end). Exit 0 only if all is sound.\n\n"
             "examples:\n  pylog verify data/events\n  pylog verify data/events --json")
    s.add_argument("path", metavar="PATH", help="log directory")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_verify)

    s = _sub(subs, "tail", "print records of a topic (console consumer)",
             "Without -f, prints the last --lines records of each partition (or\n"
             "from --from-beginning / --offset / --since) and exits. With -f it\n"
             "keeps waiting for new records. Text lines are\n"
             "PARTITION:OFFSET<TAB>TIMESTAMP<TAB>KEY<TAB>VALUE (binary escaped).\n\n"
             "examples:\n"
             "  pylog tail data/events orders\n"
             "  pylog tail data/events orders -f\n"
             "  pylog tail data/events orders --from-beginning --format json\n"
             "  pylog tail data/events orders --since 15m --partition 2\n"
             "  pylog tail data/events orders -f --group audit --from-beginning")
    s.add_argument("path", metavar="PATH", help="log directory")
    s.add_argument("topic", metavar="TOPIC")
    s.add_argument("-f", "--follow", action="store_true", help="wait for new records")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--from-beginning", action="store_true",
                   help="start at the oldest record (with --group: when the group "
                        "has no committed offset)")
    g.add_argument("--offset", type=int, metavar="N",
                   help="start at offset N of each partition (negative: N before the end)")
    g.add_argument("--since", metavar="TIME",
                   help="start at the first record at or after TIME (ISO 8601, "
                        "epoch ms, or 10m / 2h / 1d ago)")
    s.add_argument("-n", "--lines", type=cli_args.LINES, default=10, metavar="N",
                   help="records per partition to show by default (10)")
    s.add_argument("--partition", type=int, metavar="P", help="only this partition")
    s.add_argument("--group", metavar="G",
                   help="consume as a member of group G (resumes from and commits offsets)")
    s.add_argument("--max-records", type=cli_args.MAX_RECORDS, metavar="N",
                   help="stop after N records")
    s.add_argument("--format", choices=("text", "json"), default="text")
    s.set_defaults(func=cmd_tail)

    s = _sub(subs, "produce", "append stdin lines to a topic (console producer)",
             "Each line of stdin becomes one record. With --key-separator, the\n"
             "text before the first separator is the key.\n\n"
             "examples:\n"
             "  echo hello | pylog produce data/events orders\n"
             "  printf 'user-1:placed\\nuser-2:placed\\n' | pylog produce data/events orders --key-separator :\n"
             "  pylog produce data/events orders --partition 0 < events.txt")
    s.add_argument("path", metavar="PATH", help="log directory")
    s.add_argument("topic", metavar="TOPIC")
    s.add_argument("--key-separator", metavar="SEP", help="split key and value at SEP")
    s.add_argument("--partition", type=int, metavar="P",
                   help="write to partition P (default: by key, as Kafka)")
    s.add_argument("--header", action="append", metavar="K=V",
                   help="add a header to every record (repeatable)")
    s.add_argument("--create", action="store_true", help="create the topic if missing")
    s.add_argument("--partitions", type=cli_args.PARTITION_COUNT, default=1,
                   help="partitions of a topic made by --create (1)")
    s.add_argument("--skip-empty", action="store_true", help="ignore empty lines")
    s.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    s.set_defaults(func=cmd_produce)

    s = _sub(subs, "topics", "list, create, delete, describe or alter topics",
             "examples:\n"
             "  pylog topics data/events                     (same as list)\n"
             "  pylog topics data/events create orders --partitions 4\n"
             "  pylog topics data/events create audit --config retention_ms=3600000 --config compression=zstd\n"
             "  pylog topics data/events describe orders --json\n"
             "  pylog topics data/events alter orders --partitions 8 --config retention_bytes=1073741824\n"
             "  pylog topics data/events delete orders\n\n"
             "config keys: retention_ms, retention_bytes, segment_bytes, max_message_bytes,\n"
             "compression (none | zstd), message_timestamp_{after,before}_max_ms (-1: none)")
    s.add_argument("path", metavar="PATH", help="log directory")
    s.add_argument("action", nargs="?", choices=("list", "create", "delete",
                                                  "describe", "alter"),
                   metavar="ACTION", help="list | create | delete | describe | alter")
    s.add_argument("name", nargs="?", metavar="NAME", help="topic name")
    s.add_argument("--partitions", type=cli_args.PARTITION_COUNT, metavar="N",
                   help="partitions (create; alter grows the topic to N)")
    s.add_argument("--config", action="append", metavar="KEY=VALUE",
                   help="topic config (repeatable)")
    s.add_argument("--if-not-exists", action="store_true",
                   help="create: no error if the topic exists")
    s.add_argument("--if-exists", action="store_true",
                   help="delete: no error if the topic is missing")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_topics)

    s = _sub(subs, "groups", "list, describe or reset consumer groups",
             "reset is a dry run unless --execute is given (as Kafka's\n"
             "kafka-consumer-groups.sh); it is refused while the group has live\n"
             "members.\n\n"
             "examples:\n"
             "  pylog groups data/events\n"
             "  pylog groups data/events describe inventory-service\n"
             "  pylog groups data/events reset inventory-service --to-earliest\n"
             "  pylog groups data/events reset inventory-service --to-offset 100 --topic orders --execute\n"
             "  pylog groups data/events reset email --to-datetime 2024-05-01T12:00:00Z --execute")
    s.add_argument("path", metavar="PATH", help="log directory")
    s.add_argument("action", nargs="?", choices=("list", "describe", "reset"),
                   metavar="ACTION", help="list | describe | reset")
    s.add_argument("group", nargs="?", metavar="GROUP")
    s.add_argument("--to-earliest", action="store_true")
    s.add_argument("--to-latest", action="store_true")
    s.add_argument("--to-offset", type=cli_args.OFFSET, metavar="N")
    s.add_argument("--to-datetime", metavar="TIME",
                   help="ISO 8601, epoch ms, or a duration ago (1h)")
    s.add_argument("--topic", metavar="TOPIC", help="reset only this topic")
    s.add_argument("--execute", action="store_true",
                   help="apply the reset (default: dry run)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_groups)

    s = _sub(subs, "demo", "the story of pylog, live: producers, 3 groups, a crash",
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
    return p


def main(argv=None) -> int:
    import pylog
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return args.func(args)
    except CliError as exc:
        print(f"pylog: error: {exc}", file=sys.stderr)
    except pylog.PylogError as exc:
        msg = str(exc).replace("\n", " ")
        print(f"pylog: error: {msg}", file=sys.stderr)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            return EXIT_OK
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pylog: error: {where}{exc.strerror or exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("pylog: interrupted", file=sys.stderr)
        return 130
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
