"""What ``pylog verify`` (:mod:`pylog.verify`) finds on a log that other
processes change while it runs, told from damage: a topic deleted, or
made, after verify read the topics (the metadata is read again), the
directories of a deleted topic that its tombstone (M-11) has the next
open remove (L-5), and a partition whose creator has yet to make its
files (create_topic commits the metadata first: checked again, a few
times, RECHECKS apart by RECHECK_S seconds).

Thread safety: read-only functions of their arguments and the files.
Durability: nothing is written.
"""

from __future__ import annotations

import os

from . import topicdirs
from .errors import CorruptLogError

# how often, and how far apart, a live log's partition with problems is
# checked again (a create_topic under way makes its files in milliseconds)
RECHECKS, RECHECK_S = 3, 0.05


def same_topic(meta, t, doc) -> bool:
    """Whether topic ``t`` is still the incarnation ``doc`` (its M-2 id),
    read now: False once another process deleted it (or deleted it and
    made it again) after verify read the topics."""
    try:
        now = meta.get_topic(t)
    except CorruptLogError:
        return True             # reported where the topics were read
    return now is not None and now.get("id") == doc.get("id")


def exists_now(meta, t, p) -> bool:
    """Whether ``t``-``p`` exists in the metadata read now: made by a
    create_topic or create_partitions after verify read the topics."""
    try:
        doc = meta.get_topic(t)
    except CorruptLogError:
        return False
    return doc is not None and p < doc["partitions"]


def orphan(meta, t, p, d) -> bool:
    """Whether partition directory ``d`` of ``t``-``p`` belongs to no
    topic: not one made since verify read the topics (read again now),
    nor one of a deleted incarnation that its tombstone (M-11) has the
    next open or create_topic remove (a delete_topic under way, or cut
    off by a crash, L-5)."""
    if exists_now(meta, t, p):
        return False
    try:
        tomb = meta.tombstones().get(t)
    except CorruptLogError:
        tomb = None
    if tomb is not None and p < tomb["partitions"] and \
            topicdirs.read_id(d) == tomb.get("id"):
        return False
    return os.path.isdir(d)     # (gone meanwhile: the delete finished)

