"""Writes the logs of tests/data/logs-0.1.0.tar.gz with pylog 0.1.0.

Run it with pylog 0.1.0 (commit 72ac96d) on the path, not with this tree:

    git worktree add --detach /tmp/v01 72ac96d
    (cd /tmp/v01 && python setup.py build_ext --inplace)
    PYTHONPATH=/tmp/v01 python tests/data/make_log_0_1.py /tmp/out
    tar -C /tmp/out -czf tests/data/logs-0.1.0.tar.gz clean killed

``clean`` is closed normally; ``killed`` is the same story ended by
SIGKILL after its last acknowledged send, so its partitions need recovery
(P-4). Each has ``manifest.json``: every acknowledged record and the
group's committed offsets, for tests/test_upgrade.py.
"""
import base64
import hashlib
import json
import os
import signal
import sys

import pylog


def b64(b):
    return None if b is None else base64.b64encode(b).decode()


def story(path):
    log = pylog.open(path)
    log.create_topic("plain", partitions=3)
    log.create_topic("zst", partitions=2, compression="zstd")
    log.create_topic("rolled", partitions=1, segment_bytes=65536,
                     retention_bytes=65536)
    p = log.producer()
    records = []

    def send(topic, value, key=None, headers=None, timestamp_ms=None):
        md = p.send(topic, value, key=key, headers=headers, timestamp_ms=timestamp_ms)
        records.append({"topic": topic, "partition": md.partition, "offset": md.offset,
                        "key": b64(key), "value": b64(value),
                        "headers": [[k, b64(v)] for k, v in headers or []],
                        "timestamp_ms": md.timestamp_ms})

    for i in range(120):
        send("plain", b"v%d" % i, key=b"k%d" % (i % 7), headers=[("n", b"%d" % i)])
    send("plain", None, key=b"tombstone")
    send("plain", b"", key=None, headers=[("a", b"1"), ("a", None), ("\u00e9", b"\xff")])
    send("plain", b"stamped", key=b"t", timestamp_ms=1_600_000_000_000)
    for i in range(80):
        send("zst", (b"compressible %d " % i) * 40, key=b"z%d" % (i % 5))
    p.send_batch("zst", [(b"bk%d" % i, b"batch %d" % i) for i in range(30)], partition=1)
    for i in range(30):
        records.append(None)    # placeholder: read back below
    for i in range(600):
        send("rolled", hashlib.sha256(b"%d" % i).digest() * 7, key=b"r%d" % i)
    records = [r for r in records if r is not None]
    # the batch's records, from the log itself
    c = log.consumer()
    c.assign([("zst", 1)])
    c.seek_to_beginning()
    got = []
    while True:
        rs = c.poll(timeout=0.2)
        if not rs:
            break
        got += rs
    c.close()
    for r in got:
        if r.key.startswith(b"bk"):
            records.append({"topic": r.topic, "partition": r.partition, "offset": r.offset,
                            "key": b64(r.key), "value": b64(r.value), "headers": [],
                            "timestamp_ms": r.timestamp_ms})
    g = log.consumer("plain", "zst", "rolled", group_id="g1", auto_offset_reset="earliest")
    while not g.assignment():
        g.poll(timeout=0.1)
    committed = {"plain/0": 10, "plain/1": 0, "zst/1": 25}
    g.commit({(k.split("/")[0], int(k.split("/")[1])): v for k, v in committed.items()})
    g.close(autocommit=False)
    log.enforce_retention()     # deletes the first segments of "rolled"
    c = log.consumer()
    tps = [(t, q) for t, n in (("plain", 3), ("zst", 2), ("rolled", 1)) for q in range(n)]
    starts = {f"{t}/{q}": o for (t, q), o in c.beginning_offsets(tps).items()}
    c.close()
    return log, {"records": records, "committed": {"g1": committed},
                 "log_start": starts, "version": pylog.__version__}


def main(out):
    for name in ("clean", "killed"):
        path = os.path.join(out, name)
        if name == "clean":
            log, manifest = story(path)
            log.close()
            with open(os.path.join(out, name, "manifest.json"), "w") as f:
                json.dump(manifest, f)
            continue
        pid = os.fork()
        if pid == 0:
            log, manifest = story(path)
            with open(os.path.join(path, "manifest.json"), "w") as f:
                json.dump(manifest, f)
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main(sys.argv[1])
