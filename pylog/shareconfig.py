"""The settings of a share group (FORMAT.rst Q-7): the record lock
duration, the delivery limit, the in-flight limit and the dead-letter
topic belong to the group, as Kafka's share-group configs do
(``share.record.lock.duration.ms``, ``share.delivery.count.limit``,
``share.partition.max.record.locks``; KIP-1191's ``errors.deadletterqueue
.topic.name``): every consumer of a group must act the same on the same
records, or one archives at count 3 what another retries until 5.

The first share consumer of a group stores the group's settings in LMDB:
what it asked for, defaults for the rest. A later consumer that leaves a
setting unset (None) gets the group's; one that asks for another value
gets ShareGroupConfigError naming both. ``Log.alter_share_group`` changes
them while no consumer of the group is alive.

Thread safety: thread-safe (one LMDB transaction each). Durability: as
the metadata's sync mode.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import CorruptLogError, ShareGroupConfigError

KEY_PREFIX = b"sharecfg\0"
DEFAULTS: dict[str, Any] = {"record_lock_ms": 30_000, "delivery_limit": 5,
                            "max_in_flight": 2_000, "dead_letter_topic": None}


def config_key(group: str) -> bytes:
    return KEY_PREFIX + group.encode()


def _decode(raw: bytes, group: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
        assert isinstance(doc, dict) and set(doc) == set(DEFAULTS)
        return doc
    except (ValueError, AssertionError):
        raise CorruptLogError(f"the settings of share group {group!r} are damaged "
                              "in LMDB") from None


def stored(meta: Any, group: str) -> dict[str, Any] | None:
    """The group's settings, or None for a group no consumer made yet."""
    raw = meta.info_get(config_key(group), "read share group settings")
    return None if raw is None else _decode(raw, group)


def resolve(meta: Any, group: str, asked: dict[str, Any]) -> dict[str, Any]:
    """The group's settings for a consumer that asked for ``asked`` (None:
    the group's). Q-7: stored by the group's first consumer; a value that
    differs raises ShareGroupConfigError."""
    key = config_key(group)
    now = stored(meta, group)
    if now is None:
        made: dict[str, Any] = {}

        def store(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes]:
            raw = cur[key]
            if raw is not None:         # another consumer made the group first
                made.update(_decode(raw, group))
                return {}
            made.update({k: (DEFAULTS[k] if asked.get(k) is None else asked[k])
                         for k in DEFAULTS})
            return {key: json.dumps(made, sort_keys=True).encode()}
        meta.info_update([key], f"store the settings of share group {group!r}", store)
        now = made
    for k, v in asked.items():
        if v is not None and v != now[k]:
            raise ShareGroupConfigError(
                f"share group {group!r} has {k}={now[k]!r} (stored by its first "
                f"consumer); this consumer asked for {k}={v!r}. Pass {k}=None (or "
                f"the same value) to use the group's, or change the group's with "
                f"Log.alter_share_group({group!r}, {k}={v!r}) while none of its "
                "consumers is alive", group, k, now[k], v)
    return now


def alter(meta: Any, group: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Store ``changes`` over the group's settings (defaults for a new
    group); returns the new settings. The caller checked the group is idle."""
    key = config_key(group)
    out: dict[str, Any] = {}

    def update(cur: dict[bytes, bytes | None]) -> dict[bytes, bytes]:
        raw = cur[key]
        out.update(DEFAULTS if raw is None else _decode(raw, group))
        out.update(changes)
        return {key: json.dumps(out, sort_keys=True).encode()}
    meta.info_update([key], f"alter the settings of share group {group!r}", update)
    return out
