"""The one table from native status codes to pylog exceptions.

The C core (csrc/) returns an int status: 0 for success, a ``PL_C_*``
corruption reason (> 0), a ``PL_E_*`` status of its own (every one below
-1000, see pylog_native.h) or ``-errno`` of a failed system call (-1 to
-999). :func:`check` raises the exception a code means, with a message
shaped "what was tried: why (hint)"; :func:`error` builds it without
raising, for a caller that records it before raising (a partition that
fails, G8). No other module turns a native code into an exception.

A ``PL_E_*`` that a caller handles as a result rather than an error (STALE:
remap and retry; NOSPACE: make room; BUSY: the lock is held) is tested
before the call to :func:`check`; the table still gives each one an
exception, for the call sites where it cannot happen.

Thread safety: stateless; safe from any thread.
"""

from __future__ import annotations

import errno as _errno
import os as _os
from typing import Optional

from ._pylog_native import ffi, lib
from .errors import (
    CommitFailedError,
    CorruptLogError,
    FileVanishedError,
    InvalidArgument,
    LogClosed,
    LogFailedError,
    LogOSError,
    PylogError,
    TooManyOpenFilesError,
    TopicNotFound,
)

OK = lib.PL_OK
E_NOSPACE = lib.PL_E_NOSPACE
E_INVAL = lib.PL_E_INVAL
E_BUSY = lib.PL_E_BUSY
E_STALE = lib.PL_E_STALE
E_DELETED = lib.PL_E_DELETED
E_APPENDED_NO_INDEX = lib.PL_E_APPENDED_NO_INDEX
E_VANISHED = lib.PL_E_VANISHED
E_NOFD = lib.PL_E_NOFD
E_FENCED = lib.PL_E_FENCED
E_DAMAGED = lib.PL_E_DAMAGED
#: every PL_E_* is below this; -1..-999 are -errno
E_MAX = lib.PL_E_MAX

# PL_E_* -> (exception class, why, default hint)
_TABLE = {
    E_NOSPACE: (InvalidArgument, "the output does not fit the buffer given",
                "size the buffer as the call reports and retry"),
    E_INVAL: (InvalidArgument, "the native core refused an argument",
              "check the types and ranges the call documents"),
    E_BUSY: (LogFailedError, "the partition state never became stable: a writer "
             "died while publishing it", "reopen the log: its recovery repairs the state"),
    E_STALE: (LogClosed, "the partition's active segment changed or the partition "
              "was closed", "reopen the partition"),
    E_DELETED: (TopicNotFound, "the topic was deleted (P-2)",
                "create the topic again to write to it"),
    E_APPENDED_NO_INDEX: (LogOSError, "appended, but the sparse index entry was not "
                          "written", "the index is derived data and is rebuilt (I-3)"),
    E_VANISHED: (FileVanishedError, "the file is no longer at its path: its file or "
                 "directory was deleted, moved or replaced (L-6)",
                 "records acknowledged before were durable; reopen the log"),
    E_NOFD: (TooManyOpenFilesError, "no file descriptor was left for the fdatasync (EMFILE); "
             "nothing was lost", "retry, lower max_open_files= of pylog.open, or raise "
             "the process's limit (ulimit -n)"),
    E_FENCED: (CommitFailedError, "another group member owns the partition (C-4)",
               "poll again: the group rebalanced"),
    E_DAMAGED: (LogFailedError, "a commit table slot holds values no writer stores "
                "(C-7)", "a writable Log empties it and reads LMDB; reopen the log"),
}

#: every PL_E_* status, by name (tests walk it)
STATUSES = {name: getattr(lib, name) for name in dir(lib) if name.startswith("PL_E_")
            and name != "PL_E_MAX"}


def reason(code: int) -> str:
    """What the C core says a status or corruption code means."""
    return ffi.string(lib.pl_reason_str(code)).decode()


def error(rc: int, what: str, path: Optional[str] = None, *,
          position: Optional[int] = None, hint: Optional[str] = None) -> PylogError:
    """The exception native status ``rc`` (non-zero) stands for, raised by
    an attempt to ``what`` (e.g. "append to orders-3") on ``path`` (or
    None). ``hint`` replaces the table's default hint. A corruption code
    gives a CorruptLogError at ``position`` of ``path``; -errno a
    LogOSError (an OSError with that errno)."""
    if rc > 0:
        return CorruptLogError(reason(rc), path, position)
    if rc > E_MAX:
        code = -rc
        exc = OSError(code, _os.strerror(code))
        exc.filename = path
        return LogOSError.from_os_error(exc, what, hint)
    entry = _TABLE.get(rc)
    if entry is None:
        return PylogError(f"{what}: unknown native status {rc} "
                          "(a pylog bug: please report it)")
    klass, why, default_hint = entry
    where = f" ({path})" if path is not None else ""
    message = f"{what}{where}: {why} ({hint or default_hint})"
    if klass in (LogOSError, TooManyOpenFilesError):
        errno_code = _errno.EMFILE if rc == E_NOFD else None
        os_class = TooManyOpenFilesError if rc == E_NOFD else LogOSError
        return os_class(message, errno=errno_code,
                        strerror=_os.strerror(errno_code) if errno_code else None,
                        filename=path)
    return klass(message)


def check(rc: int, what: str, path: Optional[str] = None, *,
          position: Optional[int] = None, hint: Optional[str] = None) -> int:
    """Raise :func:`error` of ``rc`` when it is negative (a PL_E_* status
    or -errno); else return it: 0, or a result the caller reads (PL_WAIT_*,
    a lookup's "none", an offset)."""
    if rc < 0:
        raise error(rc, what, path, position=position, hint=hint)
    return rc


def check_corrupt(rc: int, what: str, path: Optional[str] = None, *,
                  position: Optional[int] = None, hint: Optional[str] = None) -> None:
    """:func:`check` for a call whose positive results are PL_C_*
    corruption reasons: every non-zero ``rc`` raises."""
    if rc != 0:
        raise error(rc, what, path, position=position, hint=hint)


def is_errno(rc: int) -> bool:
    """Is ``rc`` a -errno (not a PL_E_* status, not success)?"""
    return E_MAX < rc < 0
