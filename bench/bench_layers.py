"""pytest-benchmark benchmarks of the layers above the native core: segment
append/read (Partition), producer (send, send_batch), consumer (poll,
poll_values) and group commit (durable sends from threads).

Run: .venv/bin/python -m pytest bench/bench_layers.py --benchmark-only -q
Fixed seed (42); every benchmark checks what it produced or read (counts,
offsets, values in order), so a fast wrong answer fails.
"""

import random
import threading
import zlib

import pytest

import pylog
from pylog.partition import Cursor

BATCH = 1000


@pytest.fixture(scope="module")
def items():
    rng = random.Random(42)
    return [(rng.randbytes(16), rng.randbytes(100)) for _ in range(BATCH)]


@pytest.fixture
def log(tmp_path):
    lg = pylog.open(tmp_path / "log", sync="never")
    lg.create_topic("t", partitions=1, segment_bytes=1 << 30)
    yield lg
    lg.close()


def crc_of(values):
    crc = 0
    for v in values:
        crc = zlib.crc32(v, crc)
    return crc


# -- segment / partition ---------------------------------------------------------

def test_partition_append_batch_1000(benchmark, log, items):
    part = log.partition("t", 0)
    recs = [(1_700_000_000_000, k, v, ()) for k, v in items]
    bases = benchmark(lambda: part.append(recs)[0])
    st = part.state()
    assert st.next_offset % BATCH == 0 and bases == st.next_offset - BATCH


def test_partition_fetch_1000(benchmark, log, items):
    log.producer().send_batch("t", items, partition=0)
    part = log.partition("t", 0)

    def read():
        return part.fetch(Cursor(0), BATCH)
    got = benchmark(read)
    assert [(r[2], r[3]) for r in got] == items


# -- producer ---------------------------------------------------------------------

def test_producer_send_1000(benchmark, log, items):
    p = log.producer()

    def send_all():
        send = p.send
        for k, v in items:
            md = send("t", v, key=k)
        return md
    md = benchmark(send_all)
    assert (md.offset + 1) % BATCH == 0 and md.partition == 0


@pytest.mark.parametrize("shape", ["list", "tuple", "generator"])
def test_producer_send_batch_1000(benchmark, log, items, shape):
    """The same records as a list, a tuple or a generator (issue 15's bar:
    every shape at least 0.9x the list)."""
    p = log.producer()
    make = {"list": list, "tuple": tuple, "generator": lambda xs: (x for x in xs)}[shape]
    mds = benchmark(lambda: p.send_batch("t", make(items), partition=0))
    assert len(mds) == BATCH and mds[-1].offset - mds[0].offset == BATCH - 1


# -- consumer ---------------------------------------------------------------------

@pytest.fixture
def filled(log, items):
    p = log.producer()
    for _ in range(10):
        p.send_batch("t", items, partition=0)
    return log, crc_of(v for _ in range(10) for _, v in items)


def _consume(log, values_only):
    c = log.consumer("t", auto_offset_reset="earliest")
    poll = c.poll_values if values_only else c.poll
    out = poll(timeout=1.0, max_records=10 * BATCH)
    c.close()
    return out


def test_consumer_poll_records_10000(benchmark, filled):
    log, crc = filled
    recs = benchmark(_consume, log, False)
    assert len(recs) == 10 * BATCH and crc_of(r.value for r in recs) == crc
    assert [r.offset for r in recs] == list(range(10 * BATCH))


def test_consumer_poll_values_10000(benchmark, filled):
    log, crc = filled
    vals = benchmark(_consume, log, True)
    assert len(vals) == 10 * BATCH and crc_of(vals) == crc


def test_consumer_poll_one_record_batches(benchmark, log, items):
    """Records produced one send() each: a batch per record."""
    p = log.producer()
    for k, v in items:
        p.send("t", v, key=k)
    recs = benchmark(_consume, log, False)
    assert [(r.key, r.value) for r in recs] == items


# -- group commit ---------------------------------------------------------------

@pytest.mark.parametrize("sync", ["always", "never"])
@pytest.mark.parametrize("threads", [1, 16])
def test_group_commit_durable_sends(benchmark, tmp_path, items, threads, sync):
    """sync="always": 1600 per-record sends, each durable on return, from
    1 or 16 threads sharing the fdatasyncs. sync="never" is the ceiling the
    threads' Python work (serialized by the GIL) leaves any group commit."""
    lg = pylog.open(tmp_path / "durable", sync=sync)
    lg.create_topic("t", partitions=1)
    p = lg.producer()
    n = 1600

    def run():
        pool = items * 2
        chunks = [pool[i:n:threads] for i in range(threads)]

        def work(chunk):
            for k, v in chunk:
                p.send("t", v, key=k)
        ths = [threading.Thread(target=work, args=(c,)) for c in chunks]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    benchmark.pedantic(run, rounds=3, iterations=1)
    end = lg.partition("t", 0).state().next_offset
    lg.close()
    assert end == 3 * n
