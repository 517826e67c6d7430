"""Expiry of consumer groups nobody uses (FORMAT.rst M-12; Kafka's
``offsets.retention.minutes``): a group with no live member whose newest
activity — its newest commit (M-6 stores each offset's commit time) and
its members' newest heartbeat (M-7) — is older than the log's
``offsets_retention_ms`` loses its committed offsets and its group
document. Without it, the offsets of every group that ever ran (a test
run's, a one-off script's) stay listed by ``Log.groups()`` forever.

Counting from the last heartbeat too (as Kafka counts from the moment a
group became empty) means a group whose last member just died keeps its
offsets for the whole retention, however old its last commit.

Each group goes in its own LMDB write transaction
(``Metadata.delete_group``) that re-checks, on the state read in that
transaction, that the group has no live member and no activity inside the
retention: a consumer that joins or commits meanwhile either blocks the
expiry or comes after it (and starts without offsets, as after
``delete_group``). A writable Log runs :func:`expire_groups` in a thread
of its own (a deletion may wait for the metadata writer lock, which the
maintenance thread's flushes must not) when it opens and every
:data:`EXPIRY_CHECK_INTERVAL_S`.

Thread safety: thread- and process-safe (each decision is taken inside the
transaction that applies it). Durability: a deletion is an LMDB commit,
durable as the log's sync mode makes commits (M-8); one lost to a power
loss is done again by the next pass.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from . import groupstate as gs
from .errors import CorruptGroupError, InvalidArgument
from .groupstate import GroupState, Member
from .liveness import process_alive

DEFAULT_OFFSETS_RETENTION_MS = 7 * 24 * 3600 * 1000   # Kafka's default
EXPIRY_CHECK_INTERVAL_S = 60.0


def validate_offsets_retention_ms(value: object) -> int:
    """``value`` if it is a valid ``offsets_retention_ms`` (a positive int
    of milliseconds, or -1: never expire), else InvalidArgument."""
    if isinstance(value, bool) or not isinstance(value, int) or \
            not (value == -1 or 1 <= value <= 2**62):
        raise InvalidArgument(
            f"offsets_retention_ms={value!r}; expected a positive int of "
            "milliseconds (default 7 days, as Kafka's offsets.retention.minutes), "
            "or -1 to keep the offsets of idle groups forever")
    return value


class _Keep(Exception):
    """Aborts the deletion of a group found in use inside its transaction."""


def _last_heartbeat(state: GroupState) -> int:
    return max((m.heartbeat_ms for m in state.members.values()), default=0)


def _name(raw: bytes) -> str | None:
    """The group id of an LMDB key; None for one no group id encodes to
    (delete_group could not name it)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def _group_states(meta: Any, activity: dict[str, int], now: int) -> dict[str, GroupState]:
    """Every group document's state; adds each group's last heartbeat to
    ``activity``, and ``now`` for a damaged one (never ours to delete)."""
    states = {}
    with meta._txn("read group documents") as txn:
        docs = [(_name(k), bytes(v)) for k, v in txn.cursor(db=meta._groups)]
    for name, raw in docs:
        if name is None:
            continue
        try:
            # (not gs.decode: its cache is for the documents members poll)
            state = gs.from_doc(json.loads(raw))
        except (ValueError, RecursionError):
            activity[name] = now
            continue
        states[name] = state
        activity[name] = max(activity.get(name, 0), _last_heartbeat(state))
    return states


def expire_groups(meta: Any, retention_ms: int, *, now_ms: int | None = None,
                  is_alive: Callable[[Member], bool] = process_alive,
                  stopping: Callable[[], bool] = lambda: False) -> list[str]:
    """Delete every group that has no live member and no commit or
    heartbeat in the last ``retention_ms`` (-1: none is deleted); returns
    the names deleted. ``now_ms`` (default: the wall clock) and
    ``is_alive`` (the liveness probe) are injectable; ``stopping()`` true
    ends the pass between two groups (the log is closing). A group whose
    document is damaged is left alone. Raises what a metadata write raises
    (MetadataBusyError after the metadata timeout, a closed log...)."""
    if retention_ms < 0:
        return []
    now = int(time.time() * 1000) if now_ms is None else now_ms
    cutoff = now - retention_ms
    activity = meta.newest_commits()
    states = _group_states(meta, activity, now)
    gone = []
    for name in sorted(g for g, t in activity.items() if t < cutoff):
        if stopping():
            break
        state = states.get(name, gs.EMPTY)
        if gs.live(state, now, is_alive):
            continue

        def check(state: GroupState, name: str = name) -> None:
            # the same questions again, on what this transaction reads
            # (the offsets by a read that sees the latest commit: this
            # transaction holds the writer lock)
            if gs.live(state, now, is_alive) or _last_heartbeat(state) >= cutoff or \
                    meta.newest_commits(name).get(name, 0) >= cutoff:
                raise _Keep(name)
        try:
            if meta.delete_group(name, check):
                gone.append(name)
        except (_Keep, CorruptGroupError):
            pass            # in use again, or damaged meanwhile: kept
    return gone
