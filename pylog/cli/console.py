"""``pylog tail`` and ``pylog produce``: the console consumer and producer.

``tail`` prints records (text lines or JSON) and, with ``-f``, waits for
more; with ``--group`` it consumes as a group member and commits. ``produce``
appends stdin lines with ``sync="never"`` and flushes before it exits, so
every line it counted is written when it returns.
"""

from __future__ import annotations

import json
import signal
import sys
import time

from . import args as cli_args
from .args import CliError, add_command, parse_time
from .runner import EXIT_OK, iso_ms, open_log


def register(subs) -> None:
    s = add_command(subs, "tail", "print records of a topic (console consumer)",
                    "Without -f, prints the last --lines records of each partition (or\n"
                    "from --from-beginning / --offset / --since) and exits. With -f it\n"
                    "keeps waiting for new records. Text lines are\n"
                    "PARTITION:OFFSET<TAB>TIMESTAMP<TAB>KEY<TAB>VALUE (binary escaped);\n"
                    "JSON lines' headers are [key, value] pairs, in order.\n\n"
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
                   help="start at the first record at or after TIME (ISO 8601 such "
                        "as 2024 or 2024-05-01T12:00Z, epoch ms, or 10m / 2h / 1d ago)")
    s.add_argument("-n", "--lines", type=cli_args.LINES, default=10, metavar="N",
                   help="records per partition to show by default (10)")
    s.add_argument("--partition", type=int, metavar="P", help="only this partition")
    s.add_argument("--group", metavar="G",
                   help="consume as a member of group G (resumes from and commits offsets)")
    s.add_argument("--max-records", type=cli_args.MAX_RECORDS, metavar="N",
                   help="stop after N records")
    s.add_argument("--format", choices=("text", "json"), default="text")
    s.set_defaults(func=cmd_tail)

    s = add_command(subs, "produce", "append stdin lines to a topic (console producer)",
                    "Each line of stdin, without its LF or CRLF, becomes one record\n"
                    "(bytes as they are). With --key-separator, the\n"
                    "text before the first separator is the key.\n\n"
                    "examples:\n"
                    "  echo hello | pylog produce data/events orders\n"
                    "  printf 'user-1:placed\\nuser-2:placed\\n' | pylog produce data/events orders"
                    " --key-separator :\n"
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


def _record_out(r, fmt: str) -> str:
    from ..table import is_text, safe_text
    if fmt == "json":
        d = {"topic": r.topic, "partition": r.partition, "offset": r.offset,
             "timestamp_ms": r.timestamp_ms, "key": safe_text(r.key),
             "value": safe_text(r.value),
             # [key, value] pairs: a key may repeat (a dict kept only its last)
             "headers": [[k, safe_text(v)] for k, v in r.headers]}
        if not (is_text(r.key) and is_text(r.value)
                and all(is_text(v) for _, v in r.headers)):
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
        elif follow and args.partition is None:
            # subscribed, without a group: partitions added while it
            # follows are read too, and a topic deleted and made again is
            # followed into the new one; what appears later is read from
            # its start ("earliest"), only the partitions of now are
            # positioned as asked
            consumer = log.consumer(args.topic, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
            _position(consumer, tps, args, explicit_only=False)
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
    from ..errors import PylogError
    headers = []
    for h in args.header or ():     # (before the log is opened: bad input changes nothing)
        k, sep, v = h.partition("=")
        if not sep:
            raise CliError(f"--header {h!r}: expected key=value")
        headers.append((k, v.encode()))
    log = open_log(args.path, readonly=False, sync="never")
    n = 0
    try:
        if args.create and args.topic not in log.topics():
            log.create_topic(args.topic, partitions=args.partitions, exist_ok=True)
        info = log.describe_topic(args.topic)
        if args.partition is not None and not 0 <= args.partition < info.partitions:
            raise CliError(f"topic {args.topic!r} has {info.partitions} partitions; "
                           f"there is no partition {args.partition}")
        producer = log.producer()
        sep = args.key_separator.encode() if args.key_separator else None
        stdin = sys.stdin.buffer
        try:
            for lineno, line in enumerate(stdin, 1):
                # one line end (LF or CRLF); a CR before it is the line's own
                if line.endswith(b"\n"):
                    line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
                if not line and args.skip_empty:
                    continue
                key = None
                if sep is not None and sep in line:
                    key, line = line.split(sep, 1)
                try:
                    producer.send(args.topic, line, key=key, headers=headers or None,
                                  partition=args.partition)
                except PylogError as exc:
                    # say how far it got: a rerun of the whole input would
                    # store the lines before this one twice
                    producer.flush()
                    raise CliError(f"line {lineno}: {exc}; the {n} record(s) before it "
                                   "were produced") from None
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
