"""``pylog topics`` and ``pylog groups``: administration of a log.

Listing and describing open the log read-only; create, delete, alter and
``groups reset --execute`` open it for writing (each change is one metadata
transaction, durable when the command returns).
"""

from __future__ import annotations

from ..config import validate_topic_name
from ..group import lag_text
from ..table import escape_text, human_bytes, table
from . import args as cli_args
from .args import CliError, add_command, parse_config, parse_time
from .runner import EXIT_OK, emit, open_log, print_list


def register(subs) -> None:
    s = add_command(subs, "topics", "list, create, delete, describe or alter topics",
                    "examples:\n"
                    "  pylog topics data/events                     (same as list)\n"
                    "  pylog topics data/events create orders --partitions 4\n"
                    "  pylog topics data/events create audit --config retention_ms=3600000"
                    " --config compression=zstd\n"
                    "  pylog topics data/events describe orders --json\n"
                    "  pylog topics data/events alter orders --partitions 8"
                    " --config retention_bytes=1073741824\n"
                    "  pylog topics data/events delete orders\n\n"
                    "config keys: retention_ms, retention_bytes, segment_bytes,"
                    " max_message_bytes,\n"
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

    s = add_command(subs, "groups", "list, describe or reset consumer groups",
                    "reset is a dry run unless --execute is given (as Kafka's\n"
                    "kafka-consumer-groups.sh); it is refused while the group has live\n"
                    "members.\n\n"
                    "examples:\n"
                    "  pylog groups data/events\n"
                    "  pylog groups data/events describe inventory-service\n"
                    "  pylog groups data/events reset inventory-service --to-earliest\n"
                    "  pylog groups data/events reset inventory-service --to-offset 100"
                    " --topic orders --execute\n"
                    "  pylog groups data/events reset email --to-datetime 2024-05-01T12:00:00Z"
                    " --execute")
    s.add_argument("path", metavar="PATH", help="log directory")
    s.add_argument("action", nargs="?", choices=("list", "describe", "reset"),
                   metavar="ACTION", help="list | describe | reset")
    s.add_argument("group", nargs="?", metavar="GROUP")
    s.add_argument("--to-earliest", action="store_true")
    s.add_argument("--to-latest", action="store_true")
    s.add_argument("--to-offset", type=cli_args.OFFSET, metavar="N")
    s.add_argument("--to-datetime", metavar="TIME",
                   help="ISO 8601 (2024, 2024-05-01T12:00Z), epoch ms, or a "
                        "duration ago (1h)")
    s.add_argument("--topic", metavar="TOPIC", help="reset only this topic")
    s.add_argument("--execute", action="store_true",
                   help="apply the reset (default: dry run)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_groups)


# ---------------------------------------------------------------------------
# topics
# ---------------------------------------------------------------------------

def cmd_topics(args) -> int:
    action = args.action or "list"
    if action not in ("list", "describe") and not args.name:
        raise CliError(f"topics {action} needs a topic NAME")
    return _TOPIC_ACTIONS[action](args)


def _topics_list(args) -> int:
    with open_log(args.path) as log:
        infos = [log.describe_topic(t) for t in log.topics()]
    return print_list(
        args, infos, "No topics.",
        lambda i: [i.name, i.partitions,
                   sum(p.end_offset - p.start_offset for p in i.partition_info),
                   human_bytes(sum(p.bytes for p in i.partition_info)),
                   i.config.get("retention_ms"), i.config.get("compression") or "none"],
        ["TOPIC", "PARTITIONS", "RECORDS", "SIZE", "RETENTION_MS", "COMPRESSION"],
        {1, 2, 3, 4})


def _topics_describe(args) -> int:
    with open_log(args.path) as log:
        names = [args.name] if args.name else log.topics()
        infos = [log.describe_topic(n) for n in names]

    def render():
        for i, info in enumerate(infos):
            if i:
                print()
            _print_topic(info)
    return emit(args, infos if not args.name else infos[0], render)


def _topics_create(args) -> int:
    import pylog
    config = parse_config(args.config)
    validate_topic_name(args.name)      # (before the log is opened: changes nothing)
    # no open_log: create makes the log directory when it is missing
    with pylog.open(args.path) as log:
        if args.if_not_exists and args.name in log.topics():
            info = log.describe_topic(args.name)
            msg = f"topic {args.name} already exists"
        else:
            info = log.create_topic(args.name, partitions=1 if args.partitions
                                    is None else args.partitions, **config)
            msg = f"created topic {args.name} with {info.partitions} partition(s)"
    return _emit_topic(args, info, msg)


def _topics_delete(args) -> int:
    validate_topic_name(args.name)      # (before the log is opened: changes nothing)
    with open_log(args.path, readonly=False) as log:
        if args.if_exists and args.name not in log.topics():
            print(f"topic {args.name} does not exist; nothing deleted")
            return EXIT_OK
        log.delete_topic(args.name)
    return emit(args, {"deleted": args.name},
                lambda: print(f"deleted topic {args.name}"))


def _topics_alter(args) -> int:
    config = parse_config(args.config)
    if not config and args.partitions is None:
        raise CliError("topics alter needs --partitions N and/or --config key=value")
    with open_log(args.path, readonly=False) as log:
        if args.partitions is not None:
            log.create_partitions(args.name, args.partitions)
        info = log.alter_topic(args.name, **config) if config \
            else log.describe_topic(args.name)
    return _emit_topic(args, info, f"altered topic {args.name}")


_TOPIC_ACTIONS = {"list": _topics_list, "describe": _topics_describe,
                  "create": _topics_create, "delete": _topics_delete,
                  "alter": _topics_alter}


def _emit_topic(args, info, msg: str) -> int:
    def render():
        print(msg)
        _print_topic(info)
    return emit(args, info, render)


def _print_topic(info) -> None:
    cfg = ", ".join(f"{k}={v}" for k, v in info.config.items())
    print(f"Topic: {info.name}  partitions: {info.partitions}  config: {cfg}")
    rows = [[info.name, p.partition, p.start_offset, p.end_offset,
             p.end_offset - p.start_offset, human_bytes(p.bytes), p.segments]
            for p in info.partition_info]
    print(table(rows, ["TOPIC", "PARTITION", "START", "END", "RECORDS",
                       "SIZE", "SEGMENTS"], right={1, 2, 3, 4, 5, 6}))


# ---------------------------------------------------------------------------
# groups
# ---------------------------------------------------------------------------

def cmd_groups(args) -> int:
    action = args.action or "list"
    if action != "list" and not args.group:
        raise CliError(f"groups {action} needs a GROUP name")
    return _GROUP_ACTIONS[action](args)


def _groups_list(args) -> int:
    with open_log(args.path) as log:
        groups = [log.describe_group(g) for g in log.groups()]
    return print_list(
        args, groups, "No consumer groups.",
        lambda g: [g["group"], g["state"], sum(1 for m in g["members"] if m["alive"]),
                   ",".join(sorted({p["topic"] for p in g["partitions"]})) or "-",
                   g["lag"], _uncommitted(g), g["retention_resets"]],
        ["GROUP", "STATE", "MEMBERS", "TOPICS", "LAG", "NOT COMMITTED",
         "RETENTION RESETS"], {2, 4, 6})


def _uncommitted(g) -> str:
    """How many partitions count their lag from the reset policy:
    ``"2 (from earliest)"``, or ``"-"``."""
    froms = sorted({p["lag_from"] for p in g["partitions"] if p["committed"] is None})
    n = sum(1 for p in g["partitions"] if p["committed"] is None)
    if not n:
        return "-"
    return f"{n} ({', '.join(lag_text(f).removeprefix('not committed, ') for f in froms)})"


def _groups_describe(args) -> int:
    with open_log(args.path) as log:
        if args.group not in log.groups():
            raise CliError(f"group {args.group!r} does not exist in {args.path}")
        g = log.describe_group(args.group)
    return emit(args, g, lambda: _print_group(g))


def _print_group(g) -> None:
    print(f"Group: {escape_text(g['group'])}  state: {g['state']}  generation: "
          f"{g['generation']}  strategy: {g['strategy'] or '-'}  total lag: {g['lag']}")
    if g["retention_resets"]:
        print(f"Retention overtook this group {g['retention_resets']} time(s): "
              f"{g['records_skipped_by_retention']} records were deleted before "
              "it read them")
    print()
    print(table([[p["topic"], p["partition"],
                  "-" if p["committed"] is None else p["committed"], p["end_offset"],
                  p["lag"], lag_text(p["lag_from"]), p["retention_resets"], p["owner"] or "-"]
                 for p in g["partitions"]],
                ["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "LAG FROM", "RET.RESETS",
                 "OWNER"], right={1, 2, 3, 4, 6}))
    if g["members"]:
        print()
        print(table([[m["member_id"], m["client_id"] or "-", m["host"], m["pid"],
                      "yes" if m["alive"] else "no",
                      " ".join(f"{tp[0]}-{tp[1]}" for tp in m["owned"]) or "-"]
                     for m in g["members"]],
                    ["MEMBER", "CLIENT", "HOST", "PID", "ALIVE", "PARTITIONS"],
                    right={3}))


def _groups_reset(args) -> int:
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
        hint = CliError(f"group {args.group!r} has no committed offsets and no "
                        "known subscription; name a --topic to create them")
        if args.group not in log.groups() and args.topic is None:
            raise hint
        before = log.meta.group_offsets(args.group)
        plan = log.reset_group(args.group, to=to, value=value, topic=args.topic,
                               execute=args.execute)
        if not plan and args.topic is None:
            raise hint          # nothing to reset: say how to name it
    rows = [{"topic": tp.topic, "partition": tp.partition,
             "current": before.get((tp.topic, tp.partition)), "new": off}
            for tp, off in sorted(plan.items())]

    def render():
        print(table([[r["topic"], r["partition"], r["current"], r["new"]] for r in rows],
                    ["TOPIC", "PARTITION", "CURRENT", "NEW"], right={1, 2, 3}))
        if args.execute:
            print(f"Reset group {args.group}: {len(rows)} partition(s) committed.")
        else:
            print(f"Dry run: nothing changed. Re-run with --execute to reset "
                  f"group {args.group}.")
    return emit(args, {"group": args.group, "executed": bool(args.execute),
                       "plan": rows}, render)


_GROUP_ACTIONS = {"list": _groups_list, "describe": _groups_describe,
                  "reset": _groups_reset}
