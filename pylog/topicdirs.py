"""Which topic incarnation a partition directory belongs to (FORMAT.rst
L-4, L-5), and retiring the directories of a deleted one.

A topic's directories are named ``<topic>-<n>`` whatever its incarnation, so
a delete that was cut short (the process killed after the metadata commit,
the rename refused by a read-only log directory) leaves directories that a
new topic of the same name would otherwise adopt, serving the deleted
records again. Two rules prevent it:

- every partition directory carries ``topic.id``, the id (M-2) of the topic
  incarnation that created it; a directory whose id is another incarnation's
  is never opened as this one's (:func:`claim`);
- a delete records a tombstone (M-11) in the same LMDB transaction that
  removes the topic, and the tombstone stays until the directories are gone:
  ``create_topic`` of the name and every writable open finish it first.

A directory of another incarnation that still holds records is retired
only on the metadata's word (a tombstone, or the deleted mark its deleter
wrote): the id alone also follows metadata that was lost or replaced, and
its records are then their only copy (:func:`holds_records`).

Thread safety: the functions are stateless; callers serialize per Log.
Durability: ``topic.id`` is written without fsync (a topic of 1000
partitions must not cost 1000 fsyncs); it becomes durable with the
partition directory (``Partition._make_dir_durable``). A directory without
a readable id (made by an older pylog, or emptied by a power loss) is
adopted unless its state marks it deleted.
"""

from __future__ import annotations

import os
import shutil

from .errors import PylogError
from .files import open_regular
from .handles import FD_EXHAUSTED
from .segment import list_segment_bases, segment_is_empty

ID_FILE = "topic.id"
GRAVE_SUFFIX = "-delete"          # L-1: removed by the first opener


class ForeignIncarnation(Exception):
    """The directory belongs to another incarnation of the topic (``found``
    is its id, None when it has none but its state says it was deleted)."""

    def __init__(self, directory: str, found: str | None):
        self.directory = directory
        self.found = found
        super().__init__(directory)


def read_id(directory: str) -> str | None:
    """The topic id recorded in ``directory`` (None: none, or unreadable).
    Out of descriptors raises the OSError (EMFILE, ENFILE): that says
    nothing about the directory, and the caller's handle cache retries."""
    try:
        # not a regular file (a FIFO would block open(2)): no readable id
        fd = open_regular(os.path.join(directory, ID_FILE), os.O_RDONLY,
                          what="topic id file")
    except OSError as exc:
        if exc.errno in FD_EXHAUSTED:
            raise
        return None
    except PylogError:
        return None
    try:
        raw = os.read(fd, 64)
    finally:
        os.close(fd)
    text = raw.decode("ascii", "replace").strip()
    return text if len(text) == 32 and all(c in "0123456789abcdef" for c in text) \
        else None


def claim(directory: str, topic_id: str, *, deleted_mark) -> None:
    """Make ``directory`` the partition directory of incarnation
    ``topic_id``: create it if missing and record the id (L-4). Raises
    ForeignIncarnation when it belongs to another incarnation;
    ``deleted_mark(directory)`` says whether an id-less directory's state
    marks it deleted (P-2), which makes it a leftover too."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    found = read_id(directory)
    if found == topic_id:
        return
    if found is not None:
        raise ForeignIncarnation(directory, found)
    if deleted_mark(directory):
        raise ForeignIncarnation(directory, None)
    # link() publishes the id whole and refuses when a concurrent opener of
    # the same partition published first (then its id decides)
    tmp = os.path.join(directory, f"{ID_FILE}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, topic_id.encode() + b"\n")
    finally:
        os.close(fd)
    path = os.path.join(directory, ID_FILE)
    try:
        os.link(tmp, path)
    except FileExistsError:
        if read_id(directory) is None:
            # there, but empty or garbled (a power loss before it was
            # written back): no proof of another incarnation, so adopt
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    found = read_id(directory)
    if found != topic_id:
        raise ForeignIncarnation(directory, found)


def belongs_to(directory: str, topic_id: str | None) -> bool:
    """May a tombstone of incarnation ``topic_id`` remove ``directory``?
    Yes when the directory carries that id or none (an older pylog's); a
    newer incarnation's directory is never removed (L-5)."""
    found = read_id(directory)
    return found is None or found == topic_id


def holds_records(directory: str) -> bool:
    """Does a segment of ``directory`` hold a batch (S-3)? A directory or
    segment that cannot be read counts as holding records: this decides
    whether removing it may lose data."""
    try:
        return any(not segment_is_empty(directory, base)
                   for base in list_segment_bases(directory))
    except (OSError, PylogError):
        return True


def bury(directory: str) -> None:
    """Rename ``directory`` to a grave (``<dir>.<random>-delete``, L-1) and
    remove it. The rename is the step that counts: once it is done no open
    can find the directory; a failed removal of the grave is finished by the
    next first opener. OSError when the rename fails (nothing changed);
    FileNotFoundError when the directory is already gone."""
    grave = f"{directory}.{os.urandom(4).hex()}{GRAVE_SUFFIX}"
    os.rename(directory, grave)
    shutil.rmtree(grave, ignore_errors=True)
