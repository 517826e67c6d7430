"""Opening a partition while another process appends to it (FORMAT.rst
P-4, S-3): only the first opener of a log recovers published partitions.

Recovery truncates the active segment to its valid end, dropping the
preallocated tail (S-3). Run by a process that is not alone, that cut lands
under a live writer, which keeps appending through its map into the page
past the new end of file: the data is published but not in the file, and
every reader that maps the segment afresh fails with "segment is N bytes
but its data should reach M". A writable opener that is not first therefore
only initialises a partition whose state was never published, and decides
so under the append lock (P-3), where no append is half-done.
"""

import mmap
import os
import sys

import childproc

import pylog
from pylog.partition import Cursor
from pylog.verify import verify_log

OPENER = r"""
import sys, pylog
log = pylog.open(sys.argv[1], sync="never")
log.partition("t", 0)
print("opened", flush=True)
log.close()
"""

SEQ = 8          # P-2: the seqlock word of partition.state


def _segment_size(logdir):
    return os.path.getsize(os.path.join(logdir, "t-0", "00000000000000000000.log"))


def test_opener_does_not_recover_a_state_left_mid_publish(logdir, child_env):
    """A writer SIGKILLed while publishing leaves the seqlock odd, which a
    reader without the lock cannot tell from an uninitialised state. A
    second process opening the partition then must not recover it: the
    first process keeps appending to the segment it preallocated."""
    log = pylog.open(logdir, sync="never")
    try:
        log.create_topic("t", partitions=1, retention_ms=-1)
        prod = log.producer()
        for i in range(3):
            prod.send("t", b"before-%d" % i, partition=0)
        end = log.partition("t", 0).state().active_position
        assert _segment_size(logdir) > end          # preallocated (S-3)
        # what a writer killed between the two seqlock stores leaves
        with open(os.path.join(logdir, "t-0", "partition.state"), "r+b") as f:
            m = mmap.mmap(f.fileno(), 4096)
            seq = int.from_bytes(m[SEQ:SEQ + 8], sys.byteorder)
            m[SEQ:SEQ + 8] = (seq + 1).to_bytes(8, sys.byteorder)
            m.close()
        proc = childproc.start(OPENER, logdir, env=child_env)
        try:
            childproc.expect(proc, b"opened", timeout=60)
            assert proc.wait(60) == 0, childproc.stderr_tail(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert _segment_size(logdir) > end, \
            "the second opener truncated the active segment of a live writer"
        for i in range(20):                # through the writer's map
            prod.send("t", b"after-%d" % i, partition=0)
        st = log.partition("t", 0).state()
        assert _segment_size(logdir) >= st.active_position
    finally:
        log.close()
    with pylog.open(logdir, sync="never") as again:
        recs = again.partition("t", 0).fetch(Cursor(0), 10**6)
        assert [r[3] for r in recs] == [b"before-%d" % i for i in range(3)] + \
            [b"after-%d" % i for i in range(20)]
    assert not verify_log(logdir)
