"""``pylog dump`` and ``pylog verify``: the byte-level checks.

``dump`` reads one segment, .index or .timeindex file without the log's
metadata; ``verify`` checks a whole log (safe while other processes write:
it checks up to the committed end). Both exit 1 when they find problems.
Read-only: neither changes a file. On a terminal both show their progress
on stderr for large files (:mod:`.progress`; ``--quiet``: none).
"""

from __future__ import annotations

import os
import sys

from .args import CliError, add_command
from .progress import add_quiet, progress_for
from .runner import EXIT_OK, EXIT_PROBLEMS, emit, print_json, require_log


def register(subs) -> None:
    s = add_command(subs, "dump", "print the batches (and records) of a segment file",
                    "Works on a bare segment file, without the log's metadata. Problems\n"
                    "(bad CRC, broken framing, offset gaps, garbage) are reported with\n"
                    "their byte position; the dump continues where it safely can and\n"
                    "exits 1. Also decodes .index and .timeindex files.\n\n"
                    "examples:\n"
                    "  pylog dump data/events/orders-0/00000000000000000000.log\n"
                    "  pylog dump orders-0/00000000000000000000.log --records --values\n"
                    "  pylog dump 00000000000000000000.log --json | jq '.problems'\n"
                    "  pylog dump orders-0/00000000000000000000.index")
    s.add_argument("segment", metavar="SEGMENT.log",
                   help="segment file (.log, .index or .timeindex)")
    s.add_argument("--records", action="store_true", help="also print every record")
    s.add_argument("--values", action="store_true",
                   help="also print values (implies --records); text as is, "
                        "binary escaped (\\xNN)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add_quiet(s)
    s.set_defaults(func=cmd_dump)

    s = add_command(subs, "verify", "check CRCs, offsets, indexes and metadata",
                    "Checks every batch CRC and its framing, that its records decode (as a\n"
                    "consumer decodes them), offset continuity inside and\n"
                    "across segments, index entries against the log, and the LMDB\n"
                    "metadata against the segments. Safe while other processes write\n"
                    "(checks up to the committed end) and delete old segments\n"
                    "(retention, delete_records). Exit 0 only if all is sound.\n\n"
                    "examples:\n  pylog verify data/events\n  pylog verify data/events --json")
    s.add_argument("path", metavar="PATH", help="log directory")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add_quiet(s)
    s.set_defaults(func=cmd_verify)


def cmd_dump(args) -> int:
    from ..verify import dump_index, dump_segment
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
    with progress_for(args, "reading") as progress:
        d = dump_segment(path, records=args.records, values=args.values, progress=progress)
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
        shown = base if base is not None else "unknown (not a segment file name)"
        print(f"Segment base offset: {shown}, "
              f"size: {d['size']} bytes, valid end: {d['valid_end']}, "
              f"batches: {len(d['batches'])}")
        by_pos: dict[int, list] = {}
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


def cmd_verify(args) -> int:
    from ..verify import verify_log
    require_log(args.path)
    with progress_for(args, "verifying") as progress:
        problems = verify_log(args.path, progress=progress)
    path = os.path.abspath(args.path)

    def render():
        if not problems:
            print(f"OK: {path} is sound")
            return
        print(f"{len(problems)} problem(s) found in {path}:")
        for p in problems:
            pos = "-" if p.position is None else p.position
            print(f"  {p.file}  position {pos}: {p.message}")
    return emit(args, {"path": path, "ok": not problems,
                       "problems": [p.to_dict() for p in problems]},
                render, EXIT_PROBLEMS if problems else EXIT_OK)
