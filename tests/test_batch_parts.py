"""A batch read in parts (``max_records`` below its record count) is
decoded once, not again for every part (pylog.reader._one_batch): a
compressed batch, or one the native fetch leaves to it (over 65,536
records)."""

import pytest

import pylog
from pylog import TopicPartition, batch

HEADERS = (("a", b"1"), ("a", None))


@pytest.mark.parametrize("compression, n, headers",
                         [(None, 70_000, ()), ("zstd", 5000, HEADERS)])
def test_a_big_batch_read_in_parts_is_decoded_once(logdir, monkeypatch, compression, n,
                                                   headers):
    decodes = []
    real = batch.decode

    def counting(buf, header, *args):
        decodes.append(header.base_offset)
        return real(buf, header, *args)

    monkeypatch.setattr(batch, "decode", counting)
    with pylog.open(str(logdir), sync="never") as log:
        log.create_topic("t", partitions=1, compression=compression,
                         max_message_bytes=4 << 20)
        log.producer().send_batch("t", [(None, b"v%d" % i, list(headers))
                                        for i in range(n)])
        c = log.consumer("t", auto_offset_reset="earliest")
        got = []
        while len(got) < n:
            recs = c.poll(timeout=1.0, max_records=100)
            assert recs, f"stopped at {len(got)}"
            got += [(r.offset, r.value, r.headers) for r in recs]
        assert got == [(i, b"v%d" % i, headers) for i in range(n)]
        assert len(decodes) <= 2, f"the batch was decoded {len(decodes)} times"
        # values, from the middle of the batch, and a seek back into it
        c.seek(TopicPartition("t", 0), 1234)
        assert c.poll_values(timeout=1.0, max_records=3) == [b"v1234", b"v1235", b"v1236"]
        assert c.poll_values(timeout=1.0, max_records=2) == [b"v1237", b"v1238"]
        c.seek(TopicPartition("t", 0), 10)
        assert [r.offset for r in c.poll(timeout=1.0, max_records=2)] == [10, 11]
        assert [r.value for r in c.poll(timeout=1.0, max_records=1_000_000)] == \
            [b"v%d" % i for i in range(12, n)]
        assert c.poll(timeout=0.1) == []


def test_the_rows_kept_go_with_the_consumer(logdir):
    # the rows of a batch read in parts are the reading consumer's: once
    # it closes (or a seek moves it off the batch) the Log keeps none
    import gc
    import tracemalloc
    n = 20_000
    with pylog.open(str(logdir), sync="never") as log:
        log.create_topic("t", partitions=1, compression="zstd", max_message_bytes=8 << 20)
        log.producer().send_batch("t", [b"%0100d" % i for i in range(n)])
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            c = log.consumer("t", auto_offset_reset="earliest")
            assert [r.offset for r in c.poll(timeout=1.0, max_records=5)] == list(range(5))
            held = tracemalloc.get_traced_memory()[0] - base
            assert held > 2_000_000, "the test's batch is not kept while read"
            c.seek(TopicPartition("t", 0), n - 1)        # the batch holds it still
            assert [r.offset for r in c.poll(timeout=1.0, max_records=5)] == [n - 1]
            c.seek(TopicPartition("t", 0), 7)
            assert [r.offset for r in c.poll(timeout=1.0, max_records=2)] == [7, 8]
            c.close()
            del c
            gc.collect()
            left = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert left < held // 4, f"{left} bytes kept after the consumer closed"


def test_getmany_decodes_a_batch_read_in_parts_once(logdir, monkeypatch):
    # pylog.aio decodes big fetches on a copy of the cursor (a prefetch):
    # the copy starts from the cursor's kept rows and hands them back
    import asyncio

    from pylog import aio
    n = 100_000        # (enough bytes that getmany decodes in a prefetch)
    decodes = []
    real = batch.decode

    def counting(buf, header, *args):
        decodes.append(header.base_offset)
        return real(buf, header, *args)

    with pylog.open(str(logdir), sync="never") as log:
        log.create_topic("t", partitions=1, compression="zstd", max_message_bytes=32 << 20)
        log.producer().send_batch("t", [b"%0100d" % i for i in range(n)])
    monkeypatch.setattr(batch, "decode", counting)

    async def main():
        async with aio.open(str(logdir)) as alog:
            c = alog.consumer("t", auto_offset_reset="earliest")
            seen = []
            while len(seen) < n:
                got = await c.getmany(timeout_ms=1000, max_records=500)
                assert got, f"stopped at {len(seen)}"
                seen += [r.offset for recs in got.values() for r in recs]
            await c.close()
            return seen

    assert asyncio.run(main()) == list(range(n))
    assert len(decodes) <= 1, f"the batch was decoded {len(decodes)} times"
