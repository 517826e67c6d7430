"""pytest-benchmark benchmarks of the native core (pylog._native).

Run: .venv/bin/python -m pytest bench/bench_native.py --benchmark-only -q
Every benchmark checks its result against an independent oracle or the input.
"""

import os
import random

import crc32c as crc_oracle
import pytest

from pylog import _native as n

MiB = 1 << 20


@pytest.fixture(scope="module")
def one_mib():
    return os.urandom(MiB)


@pytest.fixture(scope="module")
def records():
    rng = random.Random(42)
    return [(1_700_000_000_000 + i, rng.randbytes(16), rng.randbytes(100), None)
            for i in range(1000)]


@pytest.fixture(scope="module")
def batch(records):
    return n.encode_batch(records, base_offset=0)


def test_crc32c_hw_1mib(benchmark, one_mib):
    if not n.HAS_HW_CRC32C:
        pytest.skip("no hardware CRC32C")
    got = benchmark(n.crc32c_hw, one_mib)
    assert got == crc_oracle.crc32c(one_mib)


def test_crc32c_portable_1mib(benchmark, one_mib):
    got = benchmark(n.crc32c_portable, one_mib)
    assert got == crc_oracle.crc32c(one_mib)


def test_crc32c_dispatch_1mib(benchmark, one_mib):
    got = benchmark(n.crc32c, one_mib)
    assert got == crc_oracle.crc32c(one_mib)


def test_encode_batch_into_1000x100(benchmark, records, batch):
    buf = bytearray(len(batch) + 4096)
    written = benchmark(n.encode_batch_into, buf, 0, records, base_offset=0)
    assert written == len(batch) and bytes(buf[:written]) == batch


def test_decode_records_1000(benchmark, records, batch):
    h = n.read_batch_header(batch)
    section = batch[n.BATCH_HEADER_SIZE:]
    got = benchmark(n.decode_records, section, h)
    assert len(got) == 1000
    assert [r[3] for r in got] == [r[2] for r in records]
    assert [r[2] for r in got] == [r[1] for r in records]


def test_decode_values_1000(benchmark, records, batch):
    h = n.read_batch_header(batch)
    section = batch[n.BATCH_HEADER_SIZE:]
    got = benchmark(n.decode_values, section, h)
    assert got == [r[2] for r in records]


def test_scan_64mib(benchmark, records):
    parts, off, size = [], 0, 0
    while size < 64 * MiB:
        b = n.encode_batch(records[:100], base_offset=off)
        parts.append(b)
        off += 100
        size += len(b)
    buf = b"".join(parts)
    result = benchmark.pedantic(n.scan_segment, args=(buf, 0, len(buf)),
                                kwargs={"expected_offset": 0}, rounds=5, iterations=1)
    assert result.error_position is None and result.end_position == len(buf)
    assert result.batch_count == len(parts) and result.next_offset == off
    assert len(result.index_entries) > 1000
