"""What a consumer's poll returns of the rows Partition.fetch decoded:
Records (or values) through the key and value deserializers.

A deserializer that raises stops its partition at that record (README
"Consuming"): the records before it are returned, the position goes back to
it, and DeserializationError (topic, partition, offset and the raw record)
is raised by the poll that reaches it first; with a dead-letter topic the
raw record goes there instead and the fetch goes on.

Thread safety: as the Consumer that owns it (one thread at a time).
"""

from __future__ import annotations

import logging

from .errors import DeserializationError
from .partition import Cursor
from .records import Record

_logger = logging.getLogger("pylog")


class RecordMaker:
    """Deserializers, dead-letter routing and the row type of one consumer.

    ``cursors`` is the consumer's own {TopicPartition: Cursor} (shared, so a
    refused record can put its partition's position back)."""

    def __init__(self, key_deserializer, value_deserializer, dead_letters,
                 group_id, cursors: dict) -> None:
        self._kdes = key_deserializer
        self._vdes = value_deserializer
        self._dlq = dead_letters
        self._group_id = group_id
        self._cursors = cursors
        # without deserializers the decoder builds the Records itself
        self.row_type = Record if key_deserializer is None and \
            value_deserializer is None else None

    def finish(self, recs: list, values_only: bool, tp, part, first: int,
               more: bool) -> list:
        """The poll's records of ``recs`` (``tp``'s rows from offset
        ``first``). ``more``: the poll already has records of other
        partitions, so a refused first record raises at the next poll."""
        if values_only:
            vd = self._vdes
            if vd is None:
                return recs
            try:
                return [vd(v) for v in recs]
            except Exception:
                pass            # find the refused record one by one below
        elif self.row_type is Record:
            return recs              # built as Records by the decoder
        kd, vd = self._kdes, self._vdes
        out = []
        for i, row in enumerate(recs):
            try:
                if values_only:
                    out.append(vd(row))
                else:
                    t, p, o, ts, k, v, h = row
                    out.append(Record(t, p, o, ts, kd(k) if kd and k is not None else k,
                                      vd(v) if vd and v is not None else v, h))
            except Exception as exc:
                offset = first + i if values_only else row[2]
                if not self._refused(tp, part, offset, exc, more or bool(out)):
                    return out       # the position is back on the refused record
        return out

    def _refused(self, tp, part, offset: int, exc: Exception, more: bool) -> bool:
        """A deserializer raised ``exc`` on ``tp``'s record at ``offset``.
        With a dead-letter topic the raw record goes there and the fetch
        goes on (True). Otherwise the position goes back to the record
        (False) and, unless the poll returns records before it (``more``),
        DeserializationError is raised now."""
        raw = part.fetch(Cursor(offset), 1, with_topic=True, row_type=Record)[0]
        if self._dlq is not None:
            self._dlq.route(raw, exc)
            _logger.warning("consumer group %r: %s-%d offset %d refused by the "
                            "deserializer (%s: %s); routed to %r", self._group_id,
                            tp.topic, tp.partition, offset, type(exc).__name__, exc,
                            self._dlq.topic)
            return True
        self._cursors[tp] = Cursor(offset, part.topic_id)
        if more:
            return False
        raise DeserializationError(
            f"deserialize {tp.topic}-{tp.partition} offset {offset}: "
            f"{type(exc).__name__}: {exc}; the position stays on the record: "
            f"skip it with seek(TopicPartition({tp.topic!r}, {tp.partition}), "
            f"{offset + 1}), or pass dead_letter_topic= to route such records",
            raw) from exc
