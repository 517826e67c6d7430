"""The public entry point: :func:`open` and the :class:`Log` it returns.

``Log`` is the storage-level :class:`~pylog.store.LogStore` plus what is built
on it — producers, consumers and consumer-group administration — so that
imports keep pointing one way (storage never imports its clients).

Thread safety: a Log is thread-safe; see Producer and Consumer for theirs.
"""

from __future__ import annotations

from .config import validate_group_id, validate_topic_name
from .consumer import Consumer
from .group import describe_group, reset_group
from .producer import Producer
from .store import LogStore


class Log(LogStore):
    """An open log. Create with :func:`pylog.open`; use as a context manager."""

    # -- groups ------------------------------------------------------------------
    def groups(self) -> list[str]:
        """Names of groups with members or committed offsets."""
        self._check()
        return sorted(self.meta.groups_with_offsets())

    def describe_group(self, group: str) -> dict:
        """Members, assignment, committed offsets and lag of ``group``."""
        validate_group_id(group)
        self._check()
        return describe_group(self, group)

    def reset_group(self, group: str, *, to: str, value=None,
                    topic: str | None = None, execute: bool = True) -> dict:
        """Reset a group's committed offsets: ``to`` in earliest | latest |
        offset | datetime (value = offset or timestamp ms). Refused with
        GroupNotEmpty while the group has live members. Returns the plan
        {TopicPartition: new offset}; with ``execute=False`` nothing changes."""
        validate_group_id(group)
        if topic is not None:
            validate_topic_name(topic)
        self._check()
        if execute:
            self._writable(f"reset group {group!r}")
        return reset_group(self, group, to=to, value=value, topic=topic,
                           execute=execute)

    # -- clients ------------------------------------------------------------------
    def producer(self, **kwargs) -> Producer:
        """A thread-safe producer; kwargs: key_serializer, value_serializer."""
        self._check()
        return Producer(self, **kwargs)

    def consumer(self, *topics, **kwargs) -> Consumer:
        """A consumer subscribed to ``topics`` (or none, for assign());
        kwargs as :class:`pylog.consumer.Consumer`."""
        self._check()
        return Consumer(self, *topics, **kwargs)


def open(path, *, sync: str = "always", readonly: bool = False,
         sync_interval_ms: int = 1000, allow_network_filesystem: bool = False,
         metadata_timeout: float = 10.0) -> Log:
    """Open (creating if missing, unless ``readonly``) the log at ``path``.

    ``sync``: ``"always"`` (default) — send() returns after fdatasync of the
    data; survives process crash and power loss. ``"interval"`` — a
    background flush every ``sync_interval_ms``; survives a process crash,
    a power loss may lose the last interval. ``"never"`` — the OS writes back
    when it likes; survives a process crash only.

    ``metadata_timeout``: how long (seconds) a metadata write — a commit, a
    group change, topic administration — waits for another process's
    metadata transaction before it raises MetadataBusyError naming that
    process (FORMAT.rst L-7). Appends and fetches never wait for one.
    """
    return Log(path, sync=sync, readonly=readonly,
               sync_interval_ms=sync_interval_ms,
               allow_network_filesystem=allow_network_filesystem,
               metadata_timeout=metadata_timeout)
