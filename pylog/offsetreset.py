"""Where a consumer reads a partition from when it has no usable position:
no committed offset (``auto_offset_reset``), a position past the end, or a
position retention deleted before it was read.

Retention overtaking a consumer resumes it at the log start whatever
``auto_offset_reset`` says ('latest' would skip records still retained),
logs a warning and counts it in the group (describe_group's
``retention_resets``); ``auto_offset_reset="none"`` raises instead.

'latest' means the records sent after the consumer's first poll: a topic
created (or a partition added) after that poll is read from its start, as
all its records were sent after it; a consumer that noticed it up to a
second late (its topic refresh) would otherwise skip them.

Thread safety: as the Consumer that owns it (one thread at a time).
"""

from __future__ import annotations

import logging

from .errors import OffsetOutOfRange
from .txnview import TxnView

OFFSET_RESETS = ("earliest", "latest", "none")
_logger = logging.getLogger("pylog")


class OffsetReset:
    """The reset policy of one consumer (and its group member, if any)."""

    def __init__(self, policy: str, group_id, member, committed_log=None) -> None:
        self.policy = policy
        self._group_id = group_id
        self._member = member
        # read_committed: the Log whose last stable offsets 'latest' means
        self._committed_log = committed_log
        # {topic id: partition count} of the log at the first poll (None
        # before it): what 'latest' may skip (see the module docstring)
        self._at_first_poll: dict[str, int] | None = None

    def first_poll_due(self) -> bool:
        """Whether :meth:`first_poll` would read every topic's document
        (metadata reads: pylog.aio does them off its loop, first)."""
        return self._at_first_poll is None and self.policy == "latest"

    def first_poll(self, log) -> None:
        """Note the topics the log has now, if this is the first poll."""
        if self.first_poll_due():
            self._at_first_poll = {str(doc["id"]): int(doc["partitions"])
                                   for doc in log.meta.topics().values()}

    def _made_after_first_poll(self, tp, part) -> bool:
        seen = self._at_first_poll
        if seen is None or part.topic_id is None:
            return False
        return tp.partition >= seen.get(part.topic_id, 0)

    @property
    def read_committed(self) -> bool:
        """Whether the consumer reads only committed transactions (X-4)."""
        return self._committed_log is not None

    def end(self, part) -> int:
        """The end of ``part`` a reset or seek to the end goes to: its end
        offset, or read_committed, its last stable offset (X-4): records of
        a transaction open now would be skipped for good once it commits."""
        st = part.state()
        if self._committed_log is None:
            return int(st.next_offset)
        return int(part.reader.last_stable(TxnView(self._committed_log),
                                           st.next_offset))

    def no_commit(self, tp, part) -> int:
        """Start of ``tp`` for a group without a committed offset (or a
        consumer without a group)."""
        if self.policy == "latest" and self._made_after_first_poll(tp, part):
            return part.state().log_start_offset
        return self._by_policy(tp, part, "no committed offset")

    def _by_policy(self, tp, part, why: str) -> int:
        st = part.state()
        if self.policy == "earliest":
            return st.log_start_offset
        if self.policy == "latest":
            return self.end(part)
        raise OffsetOutOfRange(f"{tp.topic}-{tp.partition}: {why} and "
                               "auto_offset_reset='none'")

    def out_of_range(self, tp, part, offset: int) -> int:
        """Where to read ``tp`` from when ``offset`` left [start, end]."""
        st = part.state()
        if offset < st.log_start_offset:
            return self._overtaken(tp, st.log_start_offset, offset)
        return self._by_policy(tp, part, f"offset {offset} is past the end "
                               f"offset {st.next_offset}")

    def _overtaken(self, tp, start: int, offset: int) -> int:
        why = (f"{tp.topic}-{tp.partition}: offset {offset} was deleted by "
               f"retention before it was read (the log now starts at {start})")
        if self.policy == "none":
            raise OffsetOutOfRange(why + " and auto_offset_reset='none'; "
                                   "seek to a retained offset to go on")
        _logger.warning("%s: %s; resuming at %d, %d records skipped",
                        "a consumer without a group" if self._group_id is None else
                        f"consumer group {self._group_id!r}", why, start, start - offset)
        if self._member is not None:
            self._member.count_retention_reset(tp, start - offset)
        return start
