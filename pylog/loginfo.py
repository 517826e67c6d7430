"""Summaries of a log for ``pylog info``: topics, partitions and groups
of an open log (:func:`log_info`), or read from the metadata and segment
files without opening it (:func:`raw_log_info`, for a damaged log whose
recovery refuses to open), and :func:`jsonable` to print API results as
JSON.

Thread safety: :func:`log_info` only calls the Log's thread-safe describe
methods; :func:`raw_log_info` uses its own read-only metadata handle and
read-only maps, and reports a file it cannot read (one deleted meanwhile
too) under "errors". Durability: nothing here writes.
"""

from __future__ import annotations

import os

from . import _native
from .errors import PylogError
from .segment import segment_path
from .verify import _File, _open_metadata, _segment_bases, _segments_bytes


def jsonable(obj):
    """Convert API results (NamedTuples, TopicPartition keys) to JSON data."""
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
        return {k: jsonable(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else
                 f"{k[0]}-{k[1]}" if isinstance(k, tuple) else str(k)): jsonable(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    return obj


def log_info(log) -> dict:
    """Topics (describe_topic) and groups (describe_group) of an open log.
    A partition that cannot be read is reported under "errors"."""
    topics, errors = [], []
    for name in log.topics():
        try:
            topics.append(jsonable(log.describe_topic(name)))
        except (PylogError, OSError) as exc:
            errors.append(f"topic {name}: {exc}")
    groups = []
    for g in log.groups():
        try:
            groups.append(jsonable(log.describe_group(g)))
        except (PylogError, OSError) as exc:
            errors.append(f"group {g}: {exc}")
    return {"path": log.path, "topics": topics, "groups": groups,
            "errors": errors}



def raw_log_info(path: str, progress=None) -> dict:
    """Like :func:`log_info` but without opening the log (for damaged logs
    whose recovery refuses to open): reads the metadata and scans the
    segment files up to their first damage. ``progress(done_bytes,
    total_bytes)`` is called as segments are scanned."""
    root = os.path.abspath(path)
    meta = _open_metadata(root, f"read {root}")
    topics, groups, errors = [], [], []
    ends = {}
    try:
        all_topics = sorted(meta.topics().items())
        total = sum(_segments_bytes(os.path.join(root, f"{name}-{p}"))
                    for name, doc in all_topics for p in range(doc["partitions"]))
        done = 0
        for name, doc in all_topics:
            pinfo = []
            for p in range(doc["partitions"]):
                d = os.path.join(root, f"{name}-{p}")
                try:
                    start = meta.partition_meta(name, p).log_start_offset
                    bases = _segment_bases(d)
                    nxt, size = start, 0
                    for b in bases:
                        with _File(segment_path(d, b)) as f:
                            if progress is not None:
                                progress(min(done, total), total)
                                done += f.size
                            r = _native.scan_segment(f.buf, 0, f.size,
                                                     segment_base_offset=b)
                            size += r.end_position
                            if r.batch_count:
                                nxt = r.next_offset
                            if r.error_position is not None:
                                errors.append(f"{f.path} at position "
                                              f"{r.error_position}: {r.error_reason}")
                                break
                    start = max(start, bases[0]) if bases else start
                    ends[(name, p)] = nxt
                    pinfo.append({"partition": p, "start_offset": start,
                                  "end_offset": nxt, "bytes": size,
                                  "segments": len(bases)})
                except (OSError, PylogError) as exc:
                    errors.append(f"{name}-{p}: {exc}")
            topics.append({"name": name, "partitions": doc["partitions"],
                           "config": dict(doc["config"]), "partition_info": pinfo})
        for g in sorted(meta.groups_with_offsets()):
            parts = []
            for (t, p), c in sorted(meta.group_offsets(g).items()):
                end = ends.get((t, p))
                parts.append({"topic": t, "partition": p, "committed": c,
                              "end_offset": end, "owner": None,
                              "lag": None if end is None else max(0, end - c)})
            groups.append({"group": g, "generation": None, "strategy": None,
                           "state": "unknown", "members": [], "partitions": parts,
                           "lag": sum(x["lag"] or 0 for x in parts)})
    except (PylogError, OSError) as exc:
        errors.append(str(exc))
    finally:
        meta.close()
    return {"path": root, "topics": topics, "groups": groups, "errors": errors}


__all__ = ["jsonable", "log_info", "raw_log_info"]
