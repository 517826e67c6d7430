"""The story of SPEC §1 as a runnable program that checks its own result.

An order service records ORDER_PLACED events keyed by user and returns at
once; inventory, e-mail and fraud each consume every event in their own
consumer group, in their own processes (inventory runs two instances that
split the partitions). Each consumer writes what it processed to its own
results topic in the same log *before* committing (at-least-once), and the
end asserts that every group saw every order.

    python examples/order_service.py [LOG_DIR]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import tempfile
import time

import pylog

TOPIC = "order-events"
GROUPS = {"inventory": 2, "email": 1, "fraud": 1}   # group -> instances
ORDERS = 2000


def consume(path: str, group: str, instance: int, expected: int) -> None:
    """One instance of a downstream service."""
    with pylog.open(path, sync="never") as log:
        results = log.producer()
        consumer = log.consumer(TOPIC, group_id=group,
                                auto_offset_reset="earliest",
                                enable_auto_commit=False,
                                client_id=f"{group}-{instance}")
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 3.0:
            records = consumer.poll(timeout=0.2, max_records=200)
            if not records:
                continue
            idle_since = time.monotonic()
            ids = [json.loads(r.value)["orderId"] for r in records]
            results.send(f"done-{group}", json.dumps(ids).encode())
            try:
                consumer.commit()     # after the work is recorded: at least once
            except pylog.CommitFailedError:
                continue    # a rebalance moved a partition: its records come again
        consumer.close()
        results.close()


def main(path: str) -> int:
    with pylog.open(path) as log:
        log.create_topic(TOPIC, partitions=4, exist_ok=True)
        for group in GROUPS:
            log.create_topic(f"done-{group}", partitions=1, exist_ok=True)

    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=consume, args=(path, g, i, ORDERS))
               for g, n in GROUPS.items() for i in range(n)]
    for w in workers:
        w.start()

    # The order service: each send returns once the event is durable.
    with pylog.open(path, sync="always") as log:
        producer = log.producer()
        t0 = time.perf_counter()
        for n in range(ORDERS):
            event = {"eventType": "ORDER_PLACED", "orderId": n,
                     "userId": f"user-{n % 97}", "amount": n % 500}
            producer.send(TOPIC, json.dumps(event).encode(),
                          key=event["userId"].encode(),
                          headers=[("source", b"web")])
        took = time.perf_counter() - t0
        producer.close()
    print(f"order service: {ORDERS} orders recorded durably in {took:.2f}s")

    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0, f"consumer {w.name} exited with {w.exitcode}"

    ok = True
    with pylog.open(path, readonly=True) as log:
        for group in GROUPS:
            c = log.consumer(f"done-{group}", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            seen: list[int] = []
            while batch := c.poll(timeout=0.5, max_records=10_000):
                for r in batch:
                    seen.extend(json.loads(r.value))
            missing = set(range(ORDERS)) - set(seen)
            dup = len(seen) - len(set(seen))
            print(f"{group:10s} processed {len(set(seen))}/{ORDERS} orders, "
                  f"{dup} redelivered, {len(missing)} missing; lag "
                  f"{log.describe_group(group)['lag']}")
            ok &= not missing and log.describe_group(group)["lag"] == 0
    print("every group saw every order" if ok else "EVENTS LOST")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="orders-")))
