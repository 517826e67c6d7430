"""``pylog verify``'s hint for a missing index file says when pylog
rebuilds it, and that is true: the active segment's by the next writable
open's first use of its partition, a sealed segment's by the first read
that looks up an offset in it (I-3)."""

import os

import pylog
from pylog.verify import verify_log


def test_deleted_indexes_come_back_when_verify_says(tmp_path):
    path = str(tmp_path / "log")
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", partitions=1, segment_bytes=65536)
        pr = log.producer()
        for i in range(1200):
            pr.send("t", b"v%05d" % i + b"y" * 100, partition=0)
    d = os.path.join(path, "t-0")
    bases = sorted(f[:-4] for f in os.listdir(d) if f.endswith(".log"))
    assert len(bases) >= 3
    for f in os.listdir(d):
        if f.endswith((".index", ".timeindex")):
            os.unlink(os.path.join(d, f))
    hints = {os.path.basename(p.file): p.message for p in verify_log(path)}
    active = bases[-1] + ".timeindex"
    assert "opened writable" in hints[active]
    assert "looks up an offset" in hints[bases[1] + ".index"]

    # a writable open that only reads the partition (and only its start)
    with pylog.open(path, sync="never") as log:
        c = log.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
        c.assign([pylog.TopicPartition("t", 0)])
        assert c.poll(timeout_ms=1000)
        c.close()
    left = {os.path.basename(p.file) for p in verify_log(path)}
    assert bases[-1] + ".index" not in left and active not in left
    assert bases[0] + ".index" not in left            # the read looked up offset 0
    assert bases[1] + ".index" in left                # not read yet: as verify says

    # and the rebuilt active indexes are the real ones: an offset lookup in
    # the active segment finds its records
    with pylog.open(path, sync="never", readonly=True) as log:
        c = log.consumer(enable_auto_commit=False)
        tp = pylog.TopicPartition("t", 0)
        c.assign([tp])
        c.seek(tp, 1199)
        (r,) = c.poll(timeout_ms=1000)
        assert r.value == b"v01199" + b"y" * 100
        c.close()
    assert os.path.getsize(os.path.join(d, bases[-1] + ".index")) > 0
