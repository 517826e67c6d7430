"""Records as columns for the one-call append (FORMAT.rst P-2, X-1) and
Kafka's key partitioner over many keys: part of the native wrapper
(pylog._native re-exports them).

Thread safety: the functions are thread-safe; an appender is used under
its writer's lock. Durability: an append is as durable as its caller's
sync says.
"""

from __future__ import annotations

from array import array as _array
from typing import NamedTuple, Optional

from . import _scratch as _scr
from ._pylog_native import ffi, lib
from .errors import InvalidArgument
from .status import check as _check

_NULL = ffi.NULL


def partitions_for_keys(keys, num_partitions: int) -> list:
    """Kafka's default partition of each key (bytes, none None), in one call."""
    n = len(keys)
    if not n:
        return []
    lens = _array("q", map(len, keys))
    blob = b"".join(keys)
    out = ffi.new("int32_t[]", n)
    rc = lib.pl_partition_many(blob, len(blob), ffi.from_buffer("int64_t[]", lens), n,
                               num_partitions, out)
    _check(rc, "partition keys", hint="keys must be bytes and num_partitions >= 1")
    return list(out)


class Columns(NamedTuple):
    """Records without headers as columns, ready for :func:`append_columns`."""
    # shadows tuple.count on purpose: the number of records, as callers name it
    count: int  # type: ignore[assignment]
    keys: bytes          # every key, concatenated (b"" when all are null)
    key_lens: Optional[list]     # per key; None when every key is null
    values: bytes
    value_lens: list

    @property
    def size(self) -> int:
        return len(self.keys) + len(self.values)


def columns(keys, values):
    """:class:`Columns` of a non-empty sequence of values and one of keys
    (or None: all keys null), or None when an element is not a bytes-like
    object of single bytes (the caller then checks item by item)."""
    try:
        vlens = list(map(len, values))
        vblob = b"".join(values)
        if keys is None:
            klens, kblob = None, b""
        else:
            klens = list(map(len, keys))
            kblob = b"".join(keys)
    except TypeError:
        return None
    # len() counts items: a memoryview of wider items would not match
    if len(vblob) != sum(vlens) or (klens is not None and len(kblob) != sum(klens)):
        return None
    return Columns(len(vlens), kblob, klens, vblob, vlens)


def _lengths(lens: list):
    """(int32 array or NULL, the common length or -1) for pl_append_columns:
    a column of equal lengths (the common case) is described by one number."""
    if lens.count(lens[0]) == len(lens):
        return _NULL, lens[0]
    return ffi.from_buffer("int32_t[]", _array("i", lens)), -1


def append_columns(a, timestamp, cols: Columns) -> int:
    """Append :class:`Columns` as one batch; ``timestamp`` is the int all
    records share, or a buffer of one int64 per record (native order)."""
    vlens, vlen = _lengths(cols.value_lens)
    klens, klen = (_NULL, -1) if cols.key_lens is None else _lengths(cols.key_lens)
    if type(timestamp) is int:
        return lib.pl_append_columns(_scr.with_append(a), cols.count, timestamp, klens, klen,
                                     cols.keys, len(cols.keys), vlens, vlen, cols.values,
                                     len(cols.values))
    stamps = ffi.from_buffer("int64_t[]", timestamp)
    if len(stamps) != cols.count:
        raise InvalidArgument(f"append_columns: {len(stamps)} timestamps for "
                              f"{cols.count} records")
    return lib.pl_append_columns_ts(_scr.with_append(a), cols.count, stamps, klens, klen,
                                    cols.keys, len(cols.keys), vlens, vlen, cols.values,
                                    len(cols.values))
