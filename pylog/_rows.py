"""Rows out of decoded records: what the native decoder and fetch
(pl_records_decode, pl_fetch) wrote as PL_RECORD_FIELDS int64 per record
becomes ``(offset, timestamp, key, value, headers)`` tuples, prefixed with
topic and partition, or built as a row type such as ``pylog.Record``.

The keys and values of a batch without headers are cut out with one
``struct.unpack`` whose format the C core writes (pl_records_shape), so no
Python frame runs per record; other batches are sliced field by field.

Thread safety: the compiled formats are a process-wide cache that is only
ever replaced whole (dict operations under the GIL); the format scratch
is per thread (pylog._scratch).
"""

from __future__ import annotations

import struct as _struct
from itertools import repeat as _repeat
from operator import add as _add

from . import _scratch
from ._pylog_native import ffi, lib
from .errors import CorruptLogError


def ints(cdata, count: int) -> list:
    """The first ``count`` int64 of ``cdata`` as a list (ffi.unpack is the
    quicker for a few, the memoryview for many)."""
    if count <= 64:
        return ffi.unpack(cdata, count) if count else []
    return memoryview(ffi.buffer(cdata, 8 * count)).cast("q").tolist()


# Compiled struct formats that cut keys and values out of a records section
# (pl_records_shape). Batches of same-sized records repeat the same format,
# so a few are kept; the cache is emptied rather than grown past its bound.
_CUTTERS: dict = {}
_CUTTERS_MAX = 16
# Below this many records a batch is cheaper to slice field by field.
_CUT_RECORDS_MIN = 8


def cut_fields(data, fields, n: int, want_keys: bool, origin: int):
    """(tuple of [key, value,] ... bytes, PL_SHAPE_* flags) with one
    struct.unpack over ``data`` from ``origin``, or None when a wanted field
    is null (the caller slices field by field)."""
    cap = n * (2 if want_keys else 1) * _scratch.SHAPE_CHARS_PER_FIELD
    fmt, out, flags, _ = _scratch.shape(cap)
    if lib.pl_records_shape(fields, n, want_keys, origin, fmt, cap, out, flags) != 0:
        return None
    key = ffi.buffer(fmt, out[0])[:]
    cutter = _CUTTERS.get(key)
    if cutter is None:
        if len(_CUTTERS) >= _CUTTERS_MAX:
            _CUTTERS.clear()
        cutter = _CUTTERS[key] = _struct.Struct(b"<" + key)
    return cutter.unpack_from(data, origin), flags[0]


_tuple_new = tuple.__new__
SHAPE_DENSE_OFFSETS = lib.PL_SHAPE_DENSE_OFFSETS
SHAPE_SAME_TIMESTAMP = lib.PL_SHAPE_SAME_TIMESTAMP
SHAPE_NULL_KEYS = lib.PL_SHAPE_NULL_KEYS


def rows(data, fields, n: int, hdr, nh: int, origin: int = 0, offset_base: int = 0,
         ts_base: int = 0, ts_fixed=None, topic=None, partition=None, row_type=None,
         values_only: bool = False) -> list:
    """Records out of decoded ``fields`` (PL_RECORD_FIELDS each, positions in
    ``data``): offset = offset_base + field 0, timestamp = ts_fixed or
    ts_base + field 1. Returns values (``values_only``), or rows
    (offset, ts, key, value, headers), prefixed with topic and partition
    when ``topic`` is given, built as ``row_type`` when given."""
    if not n:
        return []
    cut = cut_fields(data, fields, n, not values_only, origin) \
        if n >= _CUT_RECORDS_MIN and not nh else None
    if cut is not None:
        # Column-wise, without a Python frame per record: the keys and values
        # come out of one struct.unpack, every other column is a C iterator.
        kv, flags = cut
        if values_only:
            return list(kv)
        if flags & SHAPE_NULL_KEYS:
            keys, values = _repeat(None, n), kv
        else:
            keys, values = kv[0::2], kv[1::2]
        columns = memoryview(ffi.buffer(fields, 64 * n)).cast("q")
        first = offset_base + columns[0]
        offsets = (range(first, first + n) if flags & SHAPE_DENSE_OFFSETS
                   else map(_add, _repeat(offset_base), columns[0::8]))
        timestamps: _repeat[int] | map[int]
        if ts_fixed is not None:
            timestamps = _repeat(ts_fixed, n)
        elif flags & SHAPE_SAME_TIMESTAMP:
            timestamps = _repeat(ts_base + columns[1], n)
        else:
            timestamps = map(_add, _repeat(ts_base), columns[1::8])
        if topic is None:
            return list(zip(offsets, timestamps, keys, values, _repeat((), n)))
        tuples = zip(_repeat(topic, n), _repeat(partition, n), offsets, timestamps,
                     keys, values, _repeat((), n))
        if row_type is None:
            return list(tuples)
        return list(map(_tuple_new, _repeat(row_type, n), tuples))
    recs = ints(fields, 8 * n)
    if values_only:
        return [data[vo:vo + vl] if vl >= 0 else None
                for vo, vl in zip(recs[4::8], recs[5::8])]
    hdrs = ints(hdr, 4 * nh) if nh else ()
    result: list = []
    append = result.append
    it = iter(recs)
    try:
        for od, td, ko, kl, vo, vl, hi, hc in zip(it, it, it, it, it, it, it, it):
            if hc:
                hl = []
                for j in range(4 * hi, 4 * (hi + hc), 4):
                    hko, hkl, hvo, hvl = hdrs[j:j + 4]
                    hl.append((data[hko:hko + hkl].decode("utf-8"),
                               data[hvo:hvo + hvl] if hvl >= 0 else None))
                headers = tuple(hl)
            else:
                headers = ()
            if topic is None:
                append((offset_base + od, ts_fixed if ts_fixed is not None else ts_base + td,
                        data[ko:ko + kl] if kl >= 0 else None,
                        data[vo:vo + vl] if vl >= 0 else None, headers))
                continue
            row = (topic, partition, offset_base + od,
                   ts_fixed if ts_fixed is not None else ts_base + td,
                   data[ko:ko + kl] if kl >= 0 else None,
                   data[vo:vo + vl] if vl >= 0 else None, headers)
            append(row if row_type is None else _tuple_new(row_type, row))
    except UnicodeDecodeError as e:
        raise CorruptLogError(f"header key is not valid UTF-8: {e}") from e
    return result
