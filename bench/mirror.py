"""Mirroring throughput to a local Kafka-compatible broker (issue 19's bar:
>= 50,000 records/s of 100 bytes), as a ratio to the Kafka client alone in
the same run.

    .venv/bin/python bench/mirror.py [--n 200000] [--reps 3]

Records: 16-byte keys, 100-byte values (seed 42), in a local topic of 4
partitions written before the clock starts. ``mirror``: a fresh
``Mirror(..., direction="to-kafka")`` run until caught up (read from the
log, produced with the mirror's idempotent producer, acknowledged and
committed to the local group), timed from the constructor to the return of
``run``. ``client``: the same records produced from a Python list with a
confluent-kafka producer of the same settings and flushed: the limit of
the client and the broker, which the mirror cannot beat. Each rep uses a
new topic on one broker (tests/kafkabroker.py: noida-db) started here.
Best of ``--reps``. Correctness: every rep checks Kafka's end offsets
add up to ``--n``.
"""

import argparse
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka import TopicPartition as KTP  # noqa: E402
from kafkabroker import Broker  # noqa: E402

import pylog  # noqa: E402
from pylog.mirror import Mirror  # noqa: E402
from pylog.mirrortokafka import PRODUCER_CONFIG  # noqa: E402

PARTITIONS = 4


def make_items(n):
    rng = random.Random(42)
    return [(rng.randbytes(16), rng.randbytes(100)) for _ in range(n)]


def kafka_count(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
    try:
        parts = c.list_topics(timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(KTP(topic, p), timeout=10)[1] for p in parts)
    finally:
        c.close()


def run_mirror(bootstrap, items, d, rep):
    path = os.path.join(d, f"log{rep}")
    topic = f"mirror{rep}"
    with pylog.open(path, sync="never") as log:
        log.create_topic(topic, partitions=PARTITIONS)
        p = log.producer()
        for i in range(0, len(items), 1000):
            p.send_batch(topic, items[i:i + 1000])
        p.flush()
    t = time.perf_counter()
    with Mirror(path, bootstrap, topics=topic, report=lambda s: None) as m:
        stats = m.run(until_caught_up=True, timeout=600)
    elapsed = time.perf_counter() - t
    assert stats.records == len(items), stats
    assert kafka_count(bootstrap, topic) == len(items)
    return elapsed


def run_client(bootstrap, items, rep):
    topic = f"client{rep}"
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[topic].result(10)
    p = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONFIG})
    t = time.perf_counter()
    for i, (k, v) in enumerate(items):
        while True:
            try:
                p.produce(topic, v, k, partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(600) == 0
    elapsed = time.perf_counter() - t
    assert kafka_count(bootstrap, topic) == len(items)
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    items = make_items(args.n)
    with tempfile.TemporaryDirectory() as d:
        broker = Broker(os.path.join(d, "broker"))
        broker.start()
        try:
            mirror_s, client_s = [], []
            for rep in range(args.reps):
                client_s.append(run_client(broker.bootstrap, items, rep))
                mirror_s.append(run_mirror(broker.bootstrap, items, d, rep))
        finally:
            broker.kill()
    m, c = args.n / min(mirror_s), args.n / min(client_s)
    print(f"records: {args.n} x (16-byte key, 100-byte value), {PARTITIONS} partitions, "
          f"best of {args.reps}")
    print(f"mirror to Kafka (log -> broker, acked, committed): {m:12,.0f} rec/s")
    print(f"confluent-kafka producer alone (list -> broker):  {c:12,.0f} rec/s")
    print(f"ratio mirror / client: {m / c:.2f}   bar: >= 50,000 rec/s "
          f"({'met' if m >= 50_000 else 'NOT met'})")


if __name__ == "__main__":
    main()
