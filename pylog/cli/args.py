"""Parsing the arguments of the ``pylog`` console script.

Thread safety: pure functions and argparse types; no shared state.

Numbers on a command line are checked by argparse itself (the ``int_in``
types), so a bad one is refused with its usual one-line ``pylog: error:
argument ...`` (exit 2) before any log is opened or changed; times and
topic configs are parsed by :func:`parse_time` and :func:`parse_config`,
which raise :class:`CliError`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
import time

from ..config import PARTITIONS_MAX


class CliError(Exception):
    """An expected failure: printed as one line, exit code 2."""


_REL = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\Z")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
          "w": 7 * 86_400_000}


def parse_time(text: str) -> int:
    """Epoch ms from ISO 8601 (``2024-05-01T12:00``, naive = local time;
    also a year ``2024`` or a month ``2024-05``: its start), epoch
    milliseconds (``1714564800000``), or a duration ago (``10m``, ``2h``,
    ``1d``, ``-30s``). A time before 1970 is 0: every record is after it.
    Other numbers of ten digits or fewer (but ``0``) are refused: as
    milliseconds they are the first days of 1970, and a user who types
    them means epoch seconds or a year."""
    t = text.strip()
    m = _REL.match(t.lstrip("-"))
    if m:
        return max(0, int(time.time() * 1000 - float(m.group(1)) * _UNITS[m.group(2)]))
    if re.fullmatch(r"\d{4}(-\d{2})?", t):
        t += "-01" if len(t) == 7 else "-01-01"     # ISO 8601's reduced precision
    elif t.isascii() and t.isdigit() and len(t) != 8:
        if len(t) <= 10 and int(t) != 0:
            when = _dt.datetime.fromtimestamp(int(t) / 1000, _dt.timezone.utc)
            raise CliError(f"time {text!r} is ambiguous: as epoch milliseconds it is "
                           f"{when:%Y-%m-%d %H:%M} UTC; write epoch milliseconds in "
                           f"full ({int(t) * 1000} if it is epoch seconds) or ISO "
                           "8601 (2024-05-01)")
        return int(t)
    try:
        d = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"cannot parse time {text!r}: use ISO 8601 "
                       "(2024-05-01T12:00:00Z), epoch milliseconds, or a "
                       "duration ago such as 10m, 2h, 1d") from None
    try:
        return max(0, int(d.timestamp() * 1000))
    except (OverflowError, OSError, ValueError):
        if d.tzinfo is not None:
            raise CliError(f"time {text!r} is out of range") from None
    # a naive time is converted through the local zone, which cannot reach
    # the ends of datetime's range (datetime.min, datetime.max: a common
    # "from the beginning" or "to the end"); there the zone's offset now
    # stands in for the one it will have had
    offset = _dt.datetime.now().astimezone().utcoffset() or _dt.timedelta(0)
    return max(0, int(d.replace(tzinfo=_dt.timezone(offset)).timestamp() * 1000))


#: options whose value is a time that may begin with "-" (``--since -30s``)
TIME_OPTIONS = ("--since", "--to-datetime")
_AGO = re.compile(r"-\d+(?:\.\d+)?\s*(?:ms|s|m|h|d|w)\Z")


def join_time_values(argv: list[str]) -> list[str]:
    """``argv`` with ``--since -30s`` written ``--since=-30s``: argparse
    takes a value beginning with "-" (other than a plain negative number)
    for an option, and refuses ``--since -30s`` as missing its value.
    Arguments after ``--`` are positional (argparse's convention): they are
    left as they are."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--":
            out.append(arg)
            out.extend(it)
            break
        if arg in TIME_OPTIONS:
            value = next(it, None)
            if value is not None and _AGO.match(value.strip()):
                out.append(f"{arg}={value}")
                continue
            out.append(arg)
            if value is not None:
                out.append(value)
            continue
        out.append(arg)
    return out


def parse_config(items) -> dict:
    """``key=value`` pairs -> topic config dict (ints; compression=zstd|none)."""
    from ..config import TopicConfig
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_").replace(".", "_")
        if not sep:
            raise CliError(f"--config {item!r}: expected key=value")
        if key not in TopicConfig.keys():
            raise CliError(f"unknown config key {key!r}; known: "
                           f"{', '.join(TopicConfig.keys())}")
        value = value.strip()
        if key == "compression":
            out[key] = None if value.lower() in ("", "none", "null") else value
        else:
            try:
                out[key] = int(value)
            except ValueError:
                raise CliError(f"--config {key}={value!r}: expected an integer") from None
    return out


def add_command(subs, name: str, help_: str, epilog: str, description=None):
    """A subcommand parser whose description and epilog keep their lines."""
    return subs.add_parser(name, help=help_, description=description or help_,
                           epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def int_in(lo: int, hi: int | None, meaning: str):
    """An argparse ``type`` for an int in [lo, hi] (no upper bound when
    ``hi`` is None); ``meaning`` tells, in the error, what the number is."""
    bounds = f"at least {lo}" if hi is None else f"at least {lo} and at most {hi}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an integer ({meaning})") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(
                f"{value} is out of range, expected {bounds} ({meaning})")
        return value

    parse.__name__ = "integer"          # argparse's name for it in messages
    return parse


def seconds(text: str) -> float:
    """An argparse ``type`` for a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


PARTITION_COUNT = int_in(1, PARTITIONS_MAX, "the number of partitions of a topic")
LINES = int_in(0, None, "how many of the latest records of each partition to show")
MAX_RECORDS = int_in(1, None, "how many records to print before stopping")
OFFSET = int_in(0, None, "offsets start at 0; --to-earliest resets to the "
                "oldest record still kept")
EVENTS = int_in(1, None, "the number of events in the burst")
