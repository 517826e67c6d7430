"""``pylog verify``'s check of the records of the batches its framing and
CRC scan passed: every batch's records decode (FORMAT.rst R-*, B-6)
as a reader's fetch decodes them, so a batch a consumer would refuse as
corrupt is not called sound.

Thread safety: :func:`records_sound` only reads the buffer it is given.
"""

from __future__ import annotations

from . import _native, batch
from ._buffers import pointer, release
from ._scratch import FETCH_RECORDS_MAX
from .errors import CorruptLogError

_ALONE = (_native.FETCH_COMPRESSED, _native.lib.PL_FETCH_ROOM,
          _native.lib.PL_FETCH_HEADERS)


def records_sound(buf, base: int, end: int) -> bool:
    """Whether the records of every batch in ``buf[:end]`` (a segment of
    base offset ``base`` whose framing, CRCs and offsets were checked)
    decode: uncompressed batches in native calls (values only), the
    others (compressed, or too big for one) one at a time."""
    if not end:
        return True
    p = pointer(buf, writable=False)
    try:
        pos, expected, first = 0, base, base
        while pos < end:
            _, res = _native.fetch(p, buf, end, pos, expected, first,
                                   FETCH_RECORDS_MAX, _native.VALUES_ONLY)
            if res.stop == _native.FETCH_CORRUPT:
                return False
            if res.stop in _ALONE:
                h = batch.read_header(buf, res.position, end)
                try:
                    batch.decode_values(buf, h)
                except CorruptLogError:
                    return False
                pos, expected = res.position + h.size, h.last_offset + 1
                first = expected
            elif res.stop == _native.FETCH_FULL and res.position > pos:
                pos, expected, first = res.position, res.next_offset, res.position_base
            else:
                return True     # (at the end: the scan judged the framing up to it)
        return True
    finally:
        release(p)
