"""A user's program type-checks as the docs say (mypy --strict, PEP 561).

The documented forms must keep their types through the calls a user makes
(``with pylog.open(p) as log``, ``log.producer(linger_ms=...)``,
``consumer.committed(tp)``), and a misspelt name or a wrong argument type
must be flagged, not hidden by a ``__getattr__`` that returns Any. Found by
the documentation trial: ``with pylog.open(p) as log`` was a LogStore,
whose ``consumer()`` was Any, so nothing after it was checked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# each line ending in "# E" must get an error, and no other line may
PROGRAM = '''\
from __future__ import annotations

import asyncio

from typing_extensions import assert_type

import pylog
import pylog.aio
from pylog import FutureRecordMetadata, RecordMetadata, TopicPartition
from pylog.accumulator import LingerProducer
from pylog.aio.producer import AIOProducer
from pylog.aio.txnproducer import AIOTransactionalProducer
from pylog.consumer import Consumer
from pylog.producer import Producer
from pylog.txnproducer import IdempotentProducer


def main(path: str) -> None:
    with pylog.open(path) as log:
        assert_type(log, pylog.Log)
        tp = TopicPartition("t", 0)
        producer = log.producer()
        assert_type(producer, Producer)
        assert_type(producer.send("t", b"v"), RecordMetadata)
        assert_type(log.producer(linger_ms=0), Producer)
        with log.producer(linger_ms=5) as lingering:
            assert_type(lingering, LingerProducer)
            assert_type(lingering.send("t", b"v"), FutureRecordMetadata)
        assert_type(log.producer(batch_bytes=4096), LingerProducer)
        assert_type(log.producer(transactional_id="x"), IdempotentProducer)
        assert_type(log.producer(idempotent=True), IdempotentProducer)
        consumer = log.consumer("t", group_id="g")
        assert_type(consumer, Consumer)
        assert_type(consumer.committed(tp), int | None)
        assert_type(consumer.committed([tp]), dict[TopicPartition, int | None])
        for r in consumer.poll(timeout=1.0):      # bytes, or what a deserializer made
            print(r.value.decode(), b"k:" + r.key)
        for job in log.share_consumer("t", group_id="q").poll():
            print(job.value.decode())
        consumer.comit()                          # E
        producer.produce("t", b"v")               # E
        log.create_topics(["t"])                  # E
        consumer.seek(tp, "5")                    # E
        consumer.poll(timeout="1")                # E


async def amain(path: str) -> None:
    async with pylog.aio.open(path) as log:
        assert_type(log.producer(), AIOProducer)
        assert_type(log.producer(transactional_id="x"), AIOTransactionalProducer)
        await log.producer().begin_transaction()  # E


asyncio.run(amain("data"))
'''


def test_user_program_type_checks_strictly(tmp_path: object) -> None:
    pytest.importorskip("mypy")
    path = os.path.join(str(tmp_path), "user.py")
    with open(path, "w") as f:
        f.write(textwrap.dedent(PROGRAM))
    want = {i for i, line in enumerate(PROGRAM.splitlines(), 1) if line.endswith("# E")}
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", os.devnull, "--config-file", os.devnull, path],
        cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True, text=True, timeout=120)
    got = {int(m.group(1)) for m in re.finditer(r"user\.py:(\d+): error", out.stdout)}
    assert got == want, out.stdout + out.stderr
