"""Is the file or directory we hold still the one at its path? (FORMAT.rst L-6)

A log open in a process holds descriptors and maps of its directory, its
partition directories, its segments and ``meta/data.mdb``. If someone runs
``rm -rf`` on the log, deletes ``data.mdb`` or moves a directory away, the
kernel keeps the held files alive and every write to them still succeeds:
records and commits would be acknowledged into files nobody will ever open
again. An :class:`Identity` remembers the ``(st_dev, st_ino)`` a path had
when it was opened; :meth:`Identity.problem` compares it with what the path
names now. Callers check at the points where data is made durable (segment
roll, fsync group, metadata commit and sync) and once a second in the
maintenance thread — never per append: a ``stat`` costs about a microsecond.

Thread safety: immutable after construction; any thread may check.
"""

from __future__ import annotations

import os

from .errors import FileVanishedError


class Identity:
    """The identity of ``path`` (``what`` names it in messages) at creation."""

    __slots__ = ("path", "what", "key")

    def __init__(self, path: str, what: str, *, fd: int | None = None):
        st = os.fstat(fd) if fd is not None else os.stat(path)
        self.path = path
        self.what = what
        self.key = (st.st_dev, st.st_ino)

    def problem(self) -> str | None:
        """Why ``path`` no longer names the file we hold, or None. An error
        other than "not there" (EACCES, EIO) proves nothing: None."""
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return f"the {self.what} {self.path} was deleted or moved away"
        except OSError:
            return None
        if (st.st_dev, st.st_ino) != self.key:
            return (f"the {self.what} {self.path} was replaced by another "
                    "(deleted or moved, and made again)")
        return None

    def check(self, doing: str) -> None:
        """Raise FileVanishedError naming what vanished, if it did."""
        why = self.problem()
        if why is not None:
            raise vanished(doing, why)


def unlinked(seg) -> str | None:
    """Why the open segment ``seg`` (None: none) is gone: its file has no
    name left (deleted, e.g. by ``rm -rf`` of its directory); else None."""
    try:
        if seg is not None and seg.fd >= 0 and os.fstat(seg.fd).st_nlink == 0:
            return f"the segment file {seg.path} was deleted"
    except OSError:
        pass
    return None


def vanished(doing: str, why: str) -> FileVanishedError:
    """The error of a call that found its files gone (L-6)."""
    return FileVanishedError(
        f"{doing}: {why} while the log was open; what this process writes "
        "there is lost, so nothing more is acknowledged. Close the log and "
        "find out who removed it (restore from a backup if it was a mistake)")
