"""The writer's one-record appends and the handle cache (pylog.handles):
every one-record append path (``Writer.append_one``, and
``append_one_producer`` of idempotent and transactional producers) marks
the partition's state map used, so the cache's second-chance sweep does
not drop a map in constant use as idle."""

import contextlib

import pytest

import pylog

COLD = 200          # partitions whose maps the sweep keeps cycling through
PRODUCERS = [{}, {"idempotent": True}, {"transactional_id": "tx"}]
IDS = ["plain", "idempotent", "transactional"]


def _in_transaction(producer):
    return producer.transaction() if getattr(producer, "transactional_id", None) \
        else contextlib.nullcontext()


def hot_state_drops(logdir, **producer_args) -> tuple[int, int]:
    """Interleave appends of one producer to partition hot/0 with plain
    appends spread over COLD other partitions, under max_open_maps=64 (each
    cold append maps again, and sweeps); return (drops of hot/0's state
    map, the cache's evictions)."""
    with pylog.open(logdir, sync="never", max_open_maps=64) as log:
        log.create_topic("hot", partitions=1)
        log.create_topic("cold", partitions=COLD)
        hot = log.producer(**producer_args)
        cold = log.producer()
        with _in_transaction(hot):
            hot.send("hot", b"first", partition=0)   # first batch: general path
            shared = log.partition("hot", 0).shared
            drops = []
            # observes the drop: the writer's hook, first, refuses while a
            # group commit is in flight; this one is asked when that allows
            shared.unmap_hooks.append(lambda: drops.append(1) or True)
            for i in range(1000):
                hot.send("hot", b"h%d" % i, partition=0)
                cold.send("cold", b"c%d" % i, partition=i % COLD)
        evictions = log.handles.evictions
        hot.close()
        cold.close()
    with pylog.open(logdir) as log:
        assert log.partition("hot", 0).state().next_offset >= 1001
    return len(drops), evictions


@pytest.mark.parametrize("producer_args", PRODUCERS, ids=IDS)
def test_a_partition_appended_to_keeps_its_state_map(logdir, producer_args):
    """A partition appended to between every sweep keeps its state map while
    the maps of others are dropped and made again over two thousand times.
    (Second chance still drops a map in use when a sweep finds every other
    map used too: twice in this run, for every producer; a path that does
    not mark the map used has it dropped at every second pass of the sweep,
    32 times.)"""
    drops, evictions = hot_state_drops(logdir, **producer_args)
    assert evictions > 2000, evictions         # the sweep did run all along
    assert drops <= 4, drops


@pytest.mark.parametrize("producer_args", PRODUCERS, ids=IDS)
def test_one_record_appends_mark_the_state_map_used(logdir, producer_args):
    """Each one-record append sets the state map's recently-used flag that
    the sweep clears (pylog.handles)."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", partitions=1)
        prod = log.producer(**producer_args)
        part = log.partition("t", 0)
        with _in_transaction(prod):
            prod.send("t", b"first", partition=0)     # sets the appender up
            for i in range(3):
                part.shared.used = False
                offset = part.writer.appender.written_next
                prod.send("t", b"v%d" % i, partition=0)
                assert part.writer.appender.written_next == offset + 1
                assert part.shared.used is True
        prod.close()
