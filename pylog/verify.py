"""Inspection of logs and segment files, shared by the CLI and the tests.

Everything here is read-only and works on damaged data: functions return
plain data (dicts, lists of :class:`Problem`) instead of raising on
corruption. Only expected failures (a path that does not exist, a file that
cannot be read) raise ``OSError`` or :class:`pylog.PylogError`.

* :func:`dump_segment` walks a bare ``.log`` file (no metadata needed) and
  describes every batch and, optionally, every record.
* :func:`dump_index` decodes an ``.index`` or ``.timeindex`` file.
* :func:`verify_log` checks a whole log: batch CRCs and framing, offset
  continuity inside and across segments, index entries against the log, and
  the LMDB metadata against the segments. It opens nothing for writing and
  works while other processes append (it checks up to the committed end),
  roll segments, apply retention and delete_records (segments those delete
  while it runs are no damage; see :func:`_verify_partition`), and create
  and delete topics (a topic deleted or made after verify read the topics
  is no damage either, nor the directories a delete has yet to remove).

:mod:`pylog.loginfo` summarizes topics, partitions and groups.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import stat
import struct
import time
from dataclasses import asdict, dataclass

from . import _native, batch
from .cleanshutdown import clean_state, read_nonce
from .errors import CorruptLogError, LogOSError, PylogError
from .files import NotARegularFile, file_kind, open_regular
from .index import final_timestamp_problem
from .recovery import durable_end, lost_error
from .segment import (
    INDEX_ENTRY,
    TIMEINDEX_ENTRY,
    first_valid_batch_after,
    list_segment_bases,
    parse_segment_name,
    segment_path,
)
from .sharedstate import STATE_FILE, STATE_MAGIC, State, writers_present, writers_probe
from .store import check_log_dir
from .table import is_text, safe_text
from .verifylive import RECHECK_S, RECHECKS, exists_now, orphan, same_topic
from .verifyrecords import records_sound

CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
_ZERO_CHUNK = 1 << 20
_HEADER_MIN = 12          # baseOffset + batchLength
_PARTITION_DIR = re.compile(r"(.+)-(\d+)\Z")
_BASE_AND_LENGTH = struct.Struct(">qi")      # a batch's first two fields


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the file, the byte position in it (None when the
    problem concerns the whole file) and what is wrong."""
    file: str
    position: int | None
    message: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = self.file if self.position is None else \
            f"{self.file} at position {self.position}"
        return f"{where}: {self.message}"


# ---------------------------------------------------------------------------
# low-level walking
# ---------------------------------------------------------------------------

class _File:
    """A read-only view of a file (mmap; b"" when empty)."""

    def __init__(self, path: str):
        self.path = path
        # never blocks on a FIFO, never follows a symlink (NotARegularFile)
        fd = open_regular(path, os.O_RDONLY, what="segment file")
        try:
            for _ in range(8):
                self.size = os.fstat(fd).st_size
                try:
                    self.buf = (mmap.mmap(fd, self.size, mmap.MAP_SHARED,
                                          mmap.PROT_READ) if self.size else b"")
                    break
                except ValueError:
                    continue    # shrank meanwhile: a live writer's roll (S-4)
            else:
                raise PylogError(f"{path} keeps changing size; retry")
        finally:
            os.close(fd)

    def close(self) -> None:
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def first_nonzero(buf, start: int, end: int) -> int | None:
    """Position of the first non-zero byte of buf[start:end], or None."""
    pos = start
    while pos < end:
        stop = min(end, pos + _ZERO_CHUNK)
        chunk = buf[pos:stop]
        rest = chunk.lstrip(b"\0")
        if rest:
            return pos + len(chunk) - len(rest)
        pos = stop
    return None


def _valid_at(buf, pos: int, end: int) -> bool:
    try:
        return _native.read_batch_header(buf, pos, end).crc_valid
    except (CorruptLogError, PylogError):
        return False


def walk_batches(buf, start: int, end: int, *, expected_offset: int | None = None,
                 strict_tail: bool = True):
    """Yield ("batch", header) and ("problem", position, message) for
    buf[start:end], continuing after damage where a later valid batch can be
    found. A zero-filled tail (the preallocated active segment) is a clean
    end; with ``strict_tail`` non-zero bytes after it are a problem.
    The final item is ("end", valid_end, next_offset)."""
    pos = start
    expected = expected_offset
    alt_expected = None
    # after a batch with a bad CRC: the offset the batches before it
    # reached (``floor``), and the batch after it whose baseOffset (a field
    # outside the CRC) nothing confirmed yet (``unconfirmed``: position, base)
    floor: int | None = None
    unconfirmed: tuple[int, int] | None = None
    valid_end = start
    while pos < end:
        if end - pos < _HEADER_MIN or buf[pos:pos + _HEADER_MIN] == bytes(_HEADER_MIN):
            nz = first_nonzero(buf, pos, end)
            if nz is None:
                break
            if not strict_tail:
                break
            if end - pos < _HEADER_MIN and nz >= pos:
                yield ("problem", pos, f"{end - pos} trailing bytes are too few "
                       "for a batch header (truncated batch)")
                break
            # (from pos, as recovery asks: a batch's first bytes, the high
            # bytes of its baseOffset, are zeros too)
            nxt = first_valid_batch_after(buf, pos, end, min_offset=expected)
            if nxt is None:
                yield ("problem", pos, "zero bytes where a batch should start, "
                       f"but non-zero data follows at position {nz} (garbage "
                       "after the last batch)")
                break
            yield ("problem", pos, "zero bytes where a batch should start, "
                   f"followed by a valid batch at position {nxt}")
            pos = nxt
            continue
        try:
            h = _native.read_batch_header(buf, pos, end)
        except CorruptLogError as exc:
            reason = exc.reason
            nxt = first_valid_batch_after(buf, pos, end, min_offset=expected)
            if nxt is None:
                tail = first_nonzero(buf, pos, end)
                yield ("problem", pos, f"{reason}; no valid batch follows "
                       f"({end - pos} bytes unreadable{'' if tail is not None else ''})")
                break
            yield ("problem", pos, f"{reason}; skipped {nxt - pos} bytes to the "
                   f"next valid batch at position {nxt}")
            pos = nxt
            continue
        yield ("batch", h)
        if not h.crc_valid:
            nxt = h.end_position
            plausible = nxt >= end or buf[nxt:nxt + _HEADER_MIN] == bytes(
                min(_HEADER_MIN, end - nxt)) or _valid_at(buf, nxt, end)
            msg = (f"CRC32C mismatch in batch {h.base_offset}..{h.last_offset}: "
                   f"stored {h.crc:#010x} does not match its contents (B-4)")
            if not plausible:
                nxt = first_valid_batch_after(buf, pos, end, min_offset=expected)
                msg += ("; its length field looks damaged too, " +
                        (f"resuming at the next valid batch at position {nxt}"
                         if nxt is not None else "and no valid batch follows"))
            yield ("problem", pos, msg)
            if expected is not None:
                floor = expected
            expected = None          # the header is not trustworthy
            unconfirmed = None
            if nxt is None:
                break
            pos = nxt
            continue
        if expected is None and floor is not None:
            if h.base_offset < floor:
                # damaged too (a torn sector across two batches): the
                # next batch is compared with nothing, as after a bad CRC
                yield ("problem", pos, f"baseOffset {h.base_offset} is below "
                       f"offset {floor}, which the batches before reached")
                valid_end = pos = h.end_position
                continue
            unconfirmed, floor = (pos, h.base_offset), None
        elif unconfirmed is not None and h.base_offset != expected:
            # the batch after a bad-CRC one that this batch does not
            # continue: its baseOffset (outside the CRC) is the damage
            yield ("problem", unconfirmed[0], f"baseOffset {unconfirmed[1]} is "
                   f"not continued by the next batch's baseOffset "
                   f"{h.base_offset} (it follows a damaged batch)")
            expected, unconfirmed = h.base_offset, None
        else:
            unconfirmed = None
        if expected is not None and h.base_offset != expected and \
                h.base_offset != alt_expected:
            yield ("problem", pos, f"baseOffset {h.base_offset} is not the "
                   f"expected next offset {expected}")
            # the baseOffset field is outside the CRC: if the next batch
            # continues the old sequence, only this header was damaged
            alt_expected = expected + h.last_offset_delta + 1
        else:
            alt_expected = None
        expected = h.next_offset
        valid_end = h.end_position
        pos = h.end_position
    yield ("end", valid_end, expected)


# ---------------------------------------------------------------------------
# dump
# ---------------------------------------------------------------------------

def batch_dict(h) -> dict:
    return {
        "base_offset": h.base_offset, "last_offset": h.last_offset,
        "count": h.records_count, "position": h.position, "size": h.size,
        "first_timestamp": h.base_timestamp, "max_timestamp": h.max_timestamp,
        "timestamp_type": "log_append" if h.timestamp_type else "create",
        "codec": CODEC_NAMES.get(h.codec, str(h.codec)),
        "producer_id": h.producer_id, "producer_epoch": h.producer_epoch,
        "base_sequence": h.base_sequence,
        "partition_leader_epoch": h.partition_leader_epoch, "magic": h.magic,
        "is_transactional": h.is_transactional, "is_control": h.is_control,
        "crc": h.crc, "crc_valid": h.crc_valid,
    }


def record_dict(rec, values: bool) -> dict:
    offset, ts, key, value, headers = rec
    d = {"offset": offset, "timestamp": ts,
         "key": safe_text(key), "key_size": None if key is None else len(key),
         "header_keys": [k for k, _ in headers],
         "value_size": None if value is None else len(value)}
    if values:
        d["value"] = safe_text(value)
        d["value_is_text"] = is_text(value)
    return d


def dump_segment(path: str, records: bool = False, values: bool = False,
                 end: int | None = None, progress=None) -> dict:
    """Describe every batch of the segment file ``path`` (see module doc).

    Returns {"file", "size", "base_offset", "valid_end", "next_offset",
    "batches": [...], "problems": [Problem...], "not_a_segment"}; batches
    carry "records" when ``records`` (or ``values``) is true.
    "not_a_segment" is None, or why the file is no segment at all (see
    :func:`not_a_segment`; it is then the only problem).
    ``progress(done_bytes, total_bytes)`` is called as batches are read."""
    records = records or values
    base = parse_segment_name(os.path.basename(path))
    out: dict = {"file": path, "size": 0, "base_offset": base, "batches": [],
           "problems": [], "valid_end": 0, "next_offset": None,
           "not_a_segment": None}
    with _File(path) as f:
        out["size"] = f.size
        stop = f.size if end is None else min(end, f.size)
        why = not_a_segment(f.buf, stop)
        if why is not None:
            out["not_a_segment"] = why
            out["problems"].append(Problem(path, 0, why))
            return out
        for item in walk_batches(f.buf, 0, stop, expected_offset=base):
            if item[0] == "batch":
                h = item[1]
                if progress is not None:
                    progress(h.position, stop)
                d = batch_dict(h)
                if records and h.crc_valid:
                    try:
                        d["records"] = [record_dict(r, values)
                                        for r in batch.decode(f.buf, h)]
                    except CorruptLogError as exc:
                        d["records"] = []
                        out["problems"].append(Problem(
                            path, h.position, f"records of batch {h.base_offset} "
                            f"cannot be decoded: {exc.reason}"))
                out["batches"].append(d)
            elif item[0] == "problem":
                out["problems"].append(Problem(path, item[1], item[2]))
            else:
                out["valid_end"], out["next_offset"] = item[1], item[2]
        if progress is not None:
            progress(stop, stop)
    return out


def not_a_segment(buf, end: int) -> str | None:
    """Why ``buf[:end]`` is not a pylog/Kafka segment file at all, or None
    when it may be one: it neither starts with a plausible RecordBatch v2
    header (baseOffset >= 0, batchLength covering the header, magic 2) nor
    holds a valid batch anywhere. Empty and zero-filled starts (a
    preallocated segment) may be segments: damage there is a problem of the
    segment, reported by the walk."""
    if end == 0 or first_nonzero(buf, 0, min(end, _HEADER_MIN)) is None:
        return None
    magic_at = _native.MAGIC_OFFSET
    if end > magic_at:
        base_offset, length = _BASE_AND_LENGTH.unpack_from(buf, 0)
        magic = buf[magic_at]
        if magic == _native.MAGIC_V2 and base_offset >= 0 and \
                length >= _native.BATCH_HEADER_SIZE - _HEADER_MIN:
            return None
    if first_valid_batch_after(buf, -1, end) is not None:
        return None
    if end <= magic_at:
        first = f"its {end} bytes are too few for a batch header"
    elif magic != _native.MAGIC_V2:
        first = (f"byte {magic_at}, a batch's magic (format version), is "
                 f"{magic:#04x} instead of 0x02")
    else:
        first = (f"its first batch header is implausible (baseOffset "
                 f"{base_offset}, batchLength {length})")
    return (f"not a pylog/Kafka segment file: {first}, and no valid batch "
            "follows anywhere in the file")


def dump_index(path: str) -> dict:
    """Entries of an ``.index`` (relative offset, position) or ``.timeindex``
    (timestamp, relative offset) file, with problems found by validation."""
    time_index = path.endswith(".timeindex")
    ent = TIMEINDEX_ENTRY if time_index else INDEX_ENTRY
    data = _read_regular(path, "index file")
    problems = []
    usable = len(data) - len(data) % ent.size
    if usable != len(data):
        problems.append(Problem(path, usable, f"{len(data) - usable} trailing "
                                f"bytes do not make a whole {ent.size}-byte entry"))
    if time_index:
        bad = _native.timeindex_validate(data[:usable])
        entries = [{"timestamp": t, "relative_offset": r}
                   for t, r in ent.iter_unpack(data[:usable])]
    else:
        bad = _native.index_validate(data[:usable], 2**31 - 1)
        entries = [{"relative_offset": r, "position": p}
                   for r, p in ent.iter_unpack(data[:usable])]
    if bad is not None:
        problems.append(Problem(path, bad, "entries are not increasing or out "
                                "of range from here on"))
    return {"file": path, "kind": "timeindex" if time_index else "index",
            "entries": entries, "problems": problems}


# ---------------------------------------------------------------------------
# log-level helpers
# ---------------------------------------------------------------------------

def read_partition_state(part_dir: str):
    """The published state of a partition (a sharedstate.State) or None."""
    p = os.path.join(part_dir, STATE_FILE)
    try:
        fd = open_regular(p, os.O_RDONLY, what="partition state file")
    except (OSError, NotARegularFile):
        return None
    try:
        if os.fstat(fd).st_size < _native.STATE_SIZE:
            return None
        m = mmap.mmap(fd, _native.STATE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        if m[:4] != STATE_MAGIC:
            return None
        vals = _native.state_read(m)
    finally:
        m.close()
    return None if vals is None else State(vals)


def _read_regular(path: str, what: str) -> bytes:
    """A regular file's bytes (NotARegularFile for anything else: never
    blocks on a FIFO, never follows a symlink)."""
    fd = open_regular(path, os.O_RDONLY, what=what)
    try:
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


def _segment_bases(part_dir: str) -> list[int]:
    return list_segment_bases(part_dir)


def _segments_bytes(part_dir: str) -> int:
    """The size of the segment files of a partition directory (for
    progress; files that vanish or cannot be listed count 0)."""
    if not os.path.isdir(part_dir):
        return 0
    total = 0
    for b in _segment_bases(part_dir):
        try:       # lstat: a symlink is reported, not followed
            total += os.lstat(segment_path(part_dir, b)).st_size
        except OSError:
            pass
    return total


def _has_records(part_dir: str) -> bool:
    """Whether the published state of a partition directory has an end
    offset past 0 (unreadable or missing: False)."""
    st = read_partition_state(part_dir)
    return st is not None and st.next_offset > 0


def _open_metadata(root: str, action: str):
    """The log's Metadata, read-only; LogNotFound, NotALogDirectoryError or
    LogPermissionError when ``root`` is no log or cannot be read."""
    from .metadata import Metadata
    check_log_dir(root, action)
    return Metadata(root, sync=False, readonly=True, others=writers_probe(root) is True)


# ---------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------

def verify_log(path: str, progress=None) -> list[Problem]:
    """Check the whole log at ``path``; return the problems (empty: sound).

    ``progress(done_bytes, total_bytes)`` is called as segments are checked.
    Raises PylogError when ``path`` is not a log at all, and LogOSError
    when its files cannot be read (permissions, I/O) or a directory of a
    topic that still exists is removed while it runs (by hand: a topic
    deleted meanwhile is skipped).

    Thread safety: read-only, with its own read-only metadata handle; safe
    while other threads and processes write the log (see the module doc).
    Durability: it writes nothing."""
    root = os.path.abspath(path)
    problems: list[Problem] = []
    try:
        meta = _open_metadata(root, f"verify {root}")
    except CorruptLogError as exc:
        return [Problem(exc.path or os.path.join(root, "meta"), exc.position,
                        exc.reason)]
    try:
        return _verify(root, meta, problems, progress)
    except OSError as exc:
        if isinstance(exc, PylogError):
            raise
        # not damage: the files cannot be read (permissions, I/O), or a
        # directory went while verify ran (ENOENT: a topic deleted meanwhile)
        hint = _GONE_HINT if exc.errno == errno.ENOENT else _READ_HINT
        raise LogOSError.from_os_error(exc, f"verify {root}", hint) from None
    finally:
        meta.close()


_READ_HINT = "run as the log's owner, or have them grant you read access"
_GONE_HINT = "it was deleted while verify ran (a topic deleted meanwhile?): run verify again"


def _verify(root, meta, problems, progress):
    meta_path = meta.path
    live = writers_present(root)
    try:
        topics = meta.topics()
    except CorruptLogError as exc:
        problems.append(Problem(exc.path or meta_path, exc.position, exc.reason))
        return problems
    # group offsets first: anything committed before this snapshot is at
    # or below the partition ends read afterwards
    group_offsets = {}
    try:
        for g in sorted(meta.groups_with_offsets()):
            group_offsets[g] = meta.group_offsets(g)
    except (CorruptLogError, UnicodeDecodeError) as exc:
        problems.append(Problem(meta_path, None, f"consumer offsets: {exc}"))
    parts = []
    total = 0
    for t, doc in sorted(topics.items()):
        for p in range(doc["partitions"]):
            d = os.path.join(root, f"{t}-{p}")
            parts.append((t, p, d))
            total += _segments_bytes(d)
    done = [0]

    def advance(n):
        done[0] += n
        if progress is not None:
            progress(min(done[0], total), total)

    if progress is not None:
        progress(0, total)
    ends = {}
    for t, p, d in parts:
        found: list[Problem] = []
        # a live log's partition may be one whose creator has yet to make
        # its files (create_topic commits the metadata first): one that
        # had no records is checked again a few times before its problems
        # count (one with records is never read twice: no cost)
        fresh = live and not _has_records(d)
        try:
            ends[(t, p)] = _verify_partition(root, meta, t, p, d, live, found, advance)
            for _ in range(RECHECKS if fresh else 0):
                if not found:
                    break
                time.sleep(RECHECK_S)
                found = []
                ends[(t, p)] = _verify_partition(root, meta, t, p, d, live, found,
                                                 lambda n: None)
        except FileNotFoundError:
            if same_topic(meta, t, topics[t]):
                raise
        # a topic deleted (or deleted and made again) since the topics
        # were read: its directories went, which is no damage
        if found and same_topic(meta, t, topics[t]):
            problems.extend(found)
    # orphan partition directories
    for name in sorted(os.listdir(root)):
        full = os.path.join(root, name)
        m = _PARTITION_DIR.match(name)
        if not m or not os.path.isdir(full) or name.endswith("-delete"):
            continue
        t, p = m.group(1), int(m.group(2))
        if t not in topics or p >= topics[t]["partitions"]:
            if orphan(meta, t, p, full):
                problems.append(Problem(full, None, "partition directory is not in "
                                        "the metadata (no such topic or partition)"))
    # committed offsets against the partitions
    for g, offs in group_offsets.items():
        for (t, p), committed in sorted(offs.items()):
            if (t not in topics or p >= topics[t]["partitions"]) and \
                    not exists_now(meta, t, p):
                problems.append(Problem(meta_path, None, f"group {g!r} has a "
                                        f"committed offset for {t}-{p}, which "
                                        "does not exist"))
                continue
            end = ends.get((t, p))
            if end is not None and committed > end:
                problems.append(Problem(meta_path, None, f"group {g!r} committed "
                                        f"offset {committed} for {t}-{p}, past "
                                        f"its end offset {end}"))
    if progress is not None:
        progress(total, total)
    return problems


def _verify_topic_id(d, problems) -> None:
    """L-4: ``topic.id`` is a regular file when present (never opened here:
    a FIFO would block)."""
    path = os.path.join(d, "topic.id")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        problems.append(Problem(path, None, f"topic id file: {exc.strerror}"))
        return
    if not stat.S_ISREG(mode):
        problems.append(Problem(path, None, f"topic id file is a {file_kind(mode)}, "
                                "not a regular file (rewritten on the next "
                                "writable open)"))


def _verify_partition(root, meta, t, p, d, live, problems, advance):
    """Check one partition; return its end offset (None if unknown).

    Safe while other processes append, roll, apply retention and
    delete_records. It reads the metadata (its checkpoint is then at or
    below the end checked up to), the published state, the segment list
    and then the log start again: a new start is recorded before any file
    is deleted (P-5), so the list holds every segment at or past that
    start. A file found missing later is no damage only when its segment
    has fallen below the start meanwhile (:func:`_below_start`)."""
    if not os.path.isdir(d):
        problems.append(Problem(d, None, "partition directory is missing"))
        return None
    try:
        pm = meta.partition_meta(t, p)
    except CorruptLogError as exc:
        problems.append(Problem(exc.path or meta.path, None, exc.reason))
        pm = None
    _verify_topic_id(d, problems)
    st, bases = _state_and_segments(d, live)
    start = max(pm.log_start_offset, _log_start(meta, t, p)) if pm else 0
    # below the start: deleted by retention since, or leftovers of an
    # interrupted retention pass (P-5); neither is damage
    while len(bases) > 1 and bases[1] <= start:
        bases.pop(0)
    if not bases:
        problems.append(Problem(d, None, "partition has no segment files"))
        return None
    if pm is not None and start < bases[0]:
        problems.append(Problem(
            segment_path(d, bases[0]), 0,
            f"log start offset in the metadata is {start} but the first "
            f"segment begins at offset {bases[0]}: records {start}.."
            f"{bases[0] - 1} are missing"))
    next_offset = None
    for i, base in enumerate(bases):
        last = i == len(bases) - 1
        seg_path = segment_path(d, base)
        if next_offset is not None and base != next_offset:
            problems.append(Problem(seg_path, 0, f"segment starts at offset "
                                    f"{base} but the previous segment ends at "
                                    f"offset {next_offset}"))
        try:
            f = _File(seg_path)
        except FileNotFoundError:
            if not _below_start(meta, t, p, d, base):
                problems.append(Problem(seg_path, None, "segment file is missing: "
                                        "removed while verify ran, yet its "
                                        f"records from offset {base} are not "
                                        "below the log start offset"))
            next_offset = None      # the next segment starts a new run
            continue
        except NotARegularFile as exc:
            # reported, and the rest of the partition still checked; the
            # offsets it held are unknown
            problems.append(Problem(seg_path, None, exc.reason))
            next_offset = None
            continue
        with f:
            size = f.size
            if st is not None and last and base == st.active_base:
                end = st.active_position
                if end > size:
                    problems.append(Problem(seg_path, size, f"segment is {size} "
                                            f"bytes but its committed end is {end}"))
                    end = size
                strict = False
            else:
                end = size
                strict = True
            seg_next, valid_end, positions = _verify_segment(
                f, base, end, strict, problems)
            _verify_indexes(f, base, end, valid_end, seg_next, live and last,
                            problems, lambda: _below_start(meta, t, p, d, base),
                            active=last)
            if pm is not None and pm.checkpoint_base == base and pm.checkpoint_position:
                cp = pm.checkpoint_position
                if cp <= valid_end and positions is not None:
                    ok = (cp == valid_end and pm.checkpoint_next_offset == seg_next) \
                        or positions.get(cp) == pm.checkpoint_next_offset
                    if not ok:
                        problems.append(Problem(
                            meta.path, None, f"recovery checkpoint of {t}-{p} "
                            f"(segment {base}, position {cp}, next offset "
                            f"{pm.checkpoint_next_offset}) does not match a "
                            "batch boundary of the segment"))
                elif cp > valid_end and not (live and last):
                    problems.append(Problem(
                        meta.path, None, f"recovery checkpoint of {t}-{p} is at "
                        f"position {cp} of segment {base}, past its last valid "
                        f"batch ending at {valid_end}"))
        advance(size)
        next_offset = seg_next
    # P-12: the files reach the checkpoint and a clean close's state (P-9)
    clean = None if live else clean_state(d, read_nonce(root))
    lost = lost_error(d, durable_end(pm, None, clean), next_offset, bases) \
        if pm is not None and next_offset is not None else None
    if lost is not None:
        problems.append(Problem(lost.path or d, lost.position, lost.reason))
    if st is not None and next_offset is not None and next_offset != st.next_offset:
        problems.append(Problem(os.path.join(d, STATE_FILE), None,
                                f"published end offset {st.next_offset} differs "
                                f"from the segments' end offset {next_offset}"))
    if pm is not None and next_offset is not None and start > next_offset and \
            not (live and _end_reached(d, start)):
        problems.append(Problem(meta.path, None, f"log start offset {start} of "
                                f"{t}-{p} is past its end offset {next_offset}"))
    return next_offset


def _state_and_segments(d, live):
    """The published state of partition directory ``d`` (None unless
    ``live``) and the base offsets of its segments up to the state's active
    one, listed after the state was read. A listing without that active
    segment comes after a roll and retention that deleted it: both are
    taken again, a few times."""
    for _ in range(8):
        st = read_partition_state(d) if live else None
        bases = _segment_bases(d)
        if st is None:
            return None, bases
        if st.active_base in bases:
            break
    return st, [b for b in bases if b <= st.active_base]


def _below_start(meta, t, p, d, base) -> bool:
    """Whether segment ``base`` of ``t``-``p`` (directory ``d``) now lies
    wholly below the partition's log start offset: the next segment still
    present begins at or below it. Asked when a file of the segment is
    found missing: such a segment is retention's or delete_records' to
    delete (P-5), so its files going is no damage. The directory is listed
    before the start is read: a later segment deleted in between lies
    below that start too."""
    later = [b for b in _segment_bases(d) if b > base]
    return bool(later) and _log_start(meta, t, p) >= later[0]


def _log_start(meta, t, p) -> int:
    """The log start offset of ``t``-``p`` now; -1 when its metadata
    record is damaged (reported where the partition was first read)."""
    try:
        return meta.partition_meta(t, p).log_start_offset
    except CorruptLogError:
        return -1


def _end_reached(d, start) -> bool:
    """Whether the end offset a live writer publishes for partition
    directory ``d`` has reached ``start`` (a log start read after the state
    verify checked up to: delete_records moves it up to the end offset
    published when it runs, P-6)."""
    st = read_partition_state(d)
    return st is not None and st.next_offset >= start


def _verify_segment(f, base, end, strict, problems):
    """Scan one segment. Returns (next offset, valid end, {position: base
    offset of the batch there} or None when the fast path sufficed)."""
    buf = f.buf if f.size else b""
    r = _native.scan_segment(buf, 0, end, expected_offset=base,
                             segment_base_offset=base)
    clean = r.error_position is None
    if clean and strict:
        clean = first_nonzero(buf, r.end_position, end) is None
    if clean:       # (the slow path names a batch whose records do not decode)
        clean = records_sound(buf, base, r.end_position)
    if clean:
        return (r.next_offset if r.batch_count else base), r.end_position, None
    # slow path: walk batch by batch to report every problem
    positions = {}
    next_offset = base
    valid_end = 0
    for item in walk_batches(buf, 0, end, expected_offset=base, strict_tail=strict):
        if item[0] == "batch":
            h = item[1]
            positions[h.position] = h.base_offset
            if h.crc_valid:
                try:
                    batch.decode(buf, h)
                except CorruptLogError as exc:
                    problems.append(Problem(f.path, h.position,
                                            f"records cannot be decoded: {exc.reason}"))
        elif item[0] == "problem":
            problems.append(Problem(f.path, item[1], item[2]))
        else:
            valid_end, next_offset = item[1], item[2]
    return next_offset, valid_end, positions


# when a missing index file comes back (I-3)
_REBUILT_ACTIVE = ("derived data: rebuilt when the log is next opened writable "
                   "while no other Log has it open, on the first use of this partition")
_REBUILT_SEALED = ("derived data: rebuilt when a read first looks up an offset "
                   "or time in this segment, and written back if that Log is writable")


def _verify_indexes(f, base, end, valid_end, seg_next, live_active, problems,
                    below_start, *, active: bool):
    """Check segment ``f``'s index files. ``below_start()`` tells whether
    the segment has fallen below the log start since it was listed: its
    files deleted meanwhile are then not reported."""
    stem = f.path[:-4]
    ipath, tpath = stem + ".index", stem + ".timeindex"
    # seg_next is None when the segment's batches could not be followed to
    # its end (damage reported already): no bound on relative offsets then
    last_rel = seg_next - 1 - base if seg_next is not None else 2**31 - 1
    contents = {}
    for p_, kind, what in ((ipath, "offset index", "index"),
                           (tpath, "time index", "time index")):
        try:
            mode = os.lstat(p_).st_mode
            if stat.S_ISREG(mode):
                contents[p_] = _read_regular(p_, what)
        except FileNotFoundError:
            if below_start():
                return          # deleted by retention or delete_records
            problems.append(Problem(p_, None, f"{kind} file is missing ("
                                    f"{_REBUILT_ACTIVE if active else _REBUILT_SEALED})"))
            continue
        except NotARegularFile as exc:      # swapped in since the lstat
            problems.append(Problem(p_, None, exc.reason))
            continue
        if not stat.S_ISREG(mode):
            problems.append(Problem(p_, None, f"{kind} is a {file_kind(mode)}, "
                                    "not a regular file (derived data: set "
                                    "aside and rebuilt on the next writable "
                                    "open)"))
    if ipath in contents:
        limit = f.size if live_active else max(valid_end, 1)
        idx = contents[ipath]
        usable = _usable_entries(
            idx, ipath, INDEX_ENTRY.size, "index", live_active, problems,
            lambda data: _native.index_validate(data, limit),
            "index entries are not increasing or point past the end of the segment")
        for i in range(0, usable, 8):
            rel, pos = INDEX_ENTRY.unpack_from(idx, i)
            if pos >= end:
                if live_active:
                    break
                problems.append(Problem(ipath, i, f"entry (relative offset {rel}, "
                                        f"position {pos}) points past the last "
                                        f"batch, which ends at {valid_end}"))
                break
            msg = _check_index_entry(f.buf, base, rel, pos, end)
            if msg:
                problems.append(Problem(ipath, i, msg))
                break
    if tpath in contents:
        tidx = contents[tpath]
        usable = _usable_entries(
            tidx, tpath, TIMEINDEX_ENTRY.size, "time index", live_active, problems,
            _native.timeindex_validate, "time index entries are not increasing")
        for i in range(0, usable, 12):
            ts, rel = TIMEINDEX_ENTRY.unpack_from(tidx, i)
            if rel > last_rel or rel < 0:
                if live_active and rel > last_rel:
                    break
                problems.append(Problem(tpath, i, f"entry (timestamp {ts}, "
                                        f"relative offset {rel}) names an offset "
                                        f"outside the segment's 0..{last_rel}"))
                break
        idx = contents.get(ipath, b"")
        if not active and usable == len(tidx) == len(idx) // 8 * 12 + 12:
            # T-3: the final timestamp retention goes by, against the data
            msg = final_timestamp_problem(idx, tidx, len(idx) // 8, f.buf, end)
            if msg:
                problems.append(Problem(tpath, usable - 12, f"{msg}; {_REBUILT_SEALED}"))


def _usable_entries(data: bytes, path: str, entry_bytes: int, what: str,
                    live_active: bool, problems: list, validate,
                    invalid: str) -> int:
    """How many bytes of an index file's ``data`` hold entries worth
    reading: whole entries up to the first that ``validate`` rejects
    (I-1/T-1); a partial last entry (past a live writer's, expected) and a
    rejected entry are reported in ``problems``."""
    usable = len(data) - len(data) % entry_bytes
    if usable != len(data) and not live_active:
        problems.append(Problem(path, usable, f"{what} ends with a partial entry"))
    bad = validate(data[:usable])
    if bad is not None:
        problems.append(Problem(path, bad, invalid))
        usable = bad - bad % entry_bytes
    return usable


def _check_index_entry(buf, base, rel, pos, end) -> str | None:
    try:
        h = _native.read_batch_header(buf, pos, end)
    except CorruptLogError as exc:
        return (f"entry (relative offset {rel}, position {pos}) does not point "
                f"at a batch: {exc.reason}")
    if not h.crc_valid:
        return (f"entry (relative offset {rel}, position {pos}) points at a "
                "batch whose CRC is invalid")
    if h.last_offset - base != rel:
        return (f"entry says relative offset {rel} at position {pos}, but the "
                f"batch there ends at relative offset {h.last_offset - base}")
    return None


__all__ = ["Problem", "safe_text", "is_text", "walk_batches", "dump_segment",
           "not_a_segment", "dump_index", "verify_log", "read_partition_state",
           "CODEC_NAMES"]
