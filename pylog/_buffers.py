"""cdata views of Python buffers for the native calls.

:func:`rbuf` and :func:`wbuf` are views for the length of one call (use
them in a ``with`` block); :func:`pointer` pins a buffer (an mmap cannot be
closed meanwhile) until :func:`release`, for the maps a partition keeps.

Thread safety: stateless; a pointer is only as thread-safe as what it
points at.
"""

from __future__ import annotations

from ._pylog_native import ffi
from .errors import InvalidArgument


def rbuf(data):
    """A read-only cdata view of any buffer (bytes, bytearray, memoryview, mmap)."""
    try:
        return ffi.from_buffer("uint8_t[]", data)
    except TypeError as e:
        raise InvalidArgument(f"read a buffer: expected a bytes-like object, got "
                              f"{type(data).__name__}") from e


def wbuf(data):
    """A writable cdata view of ``data`` (bytearray, writable mmap...)."""
    try:
        return ffi.from_buffer("uint8_t[]", data, require_writable=True)
    except TypeError as e:
        raise InvalidArgument(
            f"write a buffer: expected a writable buffer, got {type(data).__name__}") from e


def pointer(buf, writable: bool = True):
    """A pointer into ``buf`` that stays valid (and pins the buffer, e.g. an
    mmap cannot be closed) until :func:`release` is called on it."""
    return ffi.from_buffer("uint8_t[]", buf, require_writable=writable)


def release(p) -> None:
    ffi.release(p)
