"""``pylog mirror``: mirror a log to a Kafka cluster or a Kafka cluster into
a log (:class:`pylog.mirror.Mirror`), until SIGTERM / Ctrl-C or, with
``--until-caught-up``, until everything there is was mirrored."""

from __future__ import annotations

import signal
import sys

from .args import CliError, add_command
from .runner import EXIT_OK, require_log


def register(subs) -> None:
    s = add_command(subs, "mirror", "mirror a log to Kafka, or Kafka into a log",
                    "To Kafka (default), records of the matching topics are sent to the\n"
                    "Kafka topics of the same names (created with as many partitions)\n"
                    "with keys, headers and timestamps; the position is the local\n"
                    "consumer group --group, so `pylog groups LOG` shows how far\n"
                    "behind Kafka is. From Kafka, records are appended locally and the\n"
                    "Kafka group's offsets committed once they are on disk. Both ways:\n"
                    "at least once, per-partition order kept; a broker outage only\n"
                    "delays (the records wait in the log); a killed mirror resumes.\n\n"
                    "examples:\n"
                    "  pylog mirror data/events --bootstrap-servers kafka-1:9092\n"
                    "  pylog mirror data/events --bootstrap-servers kafka-1:9092 "
                    "--topics 'order-.*'\n"
                    "  pylog mirror data/commands --bootstrap-servers kafka-1:9092 "
                    "--from-kafka --topics 'commands-edge-7'")
    s.add_argument("path", metavar="LOG", help="log directory")
    s.add_argument("--bootstrap-servers", required=True, metavar="HOST:PORT",
                   help="the Kafka cluster (host:port[,host:port...])")
    s.add_argument("--topics", default=".*", metavar="PATTERN",
                   help="regex matched against whole topic names (default: all)")
    d = s.add_mutually_exclusive_group()
    d.add_argument("--to-kafka", dest="direction", action="store_const", const="to-kafka",
                   help="local log -> Kafka (default)")
    d.add_argument("--from-kafka", dest="direction", action="store_const",
                   const="from-kafka", help="Kafka -> local log")
    s.add_argument("--group", default="pylog-mirror", metavar="G",
                   help="consumer group holding the position (default pylog-mirror)")
    s.add_argument("--max-in-flight", type=int, default=None, metavar="N",
                   help="to Kafka: records sent and not yet acknowledged and committed "
                        "(default 10,000); at N the mirror stops reading until acks "
                        "come back, and a killed mirror resends at most N")
    s.add_argument("-X", dest="config", action="append", default=[], metavar="KEY=VALUE",
                   help="a librdkafka setting for the Kafka clients (repeatable)")
    s.add_argument("--until-caught-up", action="store_true",
                   help="exit once everything there is was mirrored")
    s.set_defaults(func=cmd_mirror, direction="to-kafka")


def cmd_mirror(args) -> int:
    from ..mirror import Mirror
    config = {}
    for item in args.config:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"-X {item!r}: expected KEY=VALUE")
        config[key] = value
    if args.direction == "to-kafka":
        require_log(args.path)

    def say(message: str) -> None:
        print(f"pylog mirror: {message}", file=sys.stderr, flush=True)

    mirror = Mirror(args.path, args.bootstrap_servers, topics=args.topics,
                    direction=args.direction, group_id=args.group,
                    max_in_flight=args.max_in_flight,
                    kafka_config=config, report=say)

    def on_signal(signum, frame):
        mirror.stop()
    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        say(f"mirroring {args.path} {args.direction} {args.bootstrap_servers} "
            f"(topics {args.topics!r}, group {args.group!r})")
        stats = mirror.run(until_caught_up=args.until_caught_up)
    finally:
        mirror.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    say(f"stopped: {stats.records} records mirrored, {stats.rewinds} rewinds, "
        f"{stats.skipped_by_retention} records deleted by retention before they were sent")
    return EXIT_OK
