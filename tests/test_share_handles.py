"""Share consumers out of file descriptors (found by a user trial: a share
group over 1,600 partitions at ``ulimit -n 256``): each share-partition a
share consumer reads keeps its state file open (pylog.sharestate), so
running out of descriptors there must be TooManyOpenFilesError — after the
Log closed its idle segments and tried again — never a bare OSError, with
the records acquired before it delivered and nothing lost."""

import errno
import os
import resource
import time

import pytest

import pylog
from pylog.errors import TooManyOpenFilesError


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class UsedUp:
    """The soft limit ``headroom`` descriptors above those open, all of
    them but ``spare`` taken (as other parts of the process would), until
    ``free()``."""

    def __init__(self, headroom: int, spare: int):
        self.limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.hog: list[int] = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + headroom, self.limits[1]))
        try:
            while True:
                self.hog.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE
        for _ in range(spare):
            os.close(self.hog.pop())

    def free(self) -> None:
        for fd in self.hog:
            os.close(fd)
        self.hog = []
        resource.setrlimit(resource.RLIMIT_NOFILE, self.limits)


@pytest.mark.parametrize("spare", [3, 5, 7, 9])
def test_share_consumer_out_of_descriptors_is_a_pylog_error(logdir, spare):
    """Out of descriptors part-way through a poll (``spare`` free: a few
    share files and segments open, then none): TooManyOpenFilesError, the
    records acquired first delivered, those acquired but not read given
    back; once descriptors are free every record comes, once, at once —
    none waits for its 30 s lock."""
    parts = 12
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("jobs", partitions=parts)
        prod = log.producer()
        sent = {(p, i) for p in range(parts) for i in range(5)}
        for p, i in sorted(sent):
            prod.send("jobs", b"%d/%d" % (p, i), partition=p)
        for p in range(parts):              # no segment open: only share files count
            log.partition("jobs", p).reader.close()
        log.handles.shrink()
        worker = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest")
        got: list[tuple[int, int]] = []

        def take(records):
            for r in records:
                got.append(tuple(int(x) for x in r.value.split(b"/")))
                worker.acknowledge(r, "accept")

        hog = UsedUp(32, spare)
        try:
            raised = None
            for _ in range(parts):
                try:
                    take(worker.poll(timeout_ms=0))
                except TooManyOpenFilesError as exc:
                    raised = exc
                    break
        finally:
            hog.free()
        assert raised is not None, "a share consumer over 12 partitions fit in 6 descriptors"
        assert raised.errno in (errno.EMFILE, errno.ENFILE)
        assert "ulimit -n" in str(raised) and "share" in str(raised)
        # descriptors free again: every record, once, none lost
        deadline = time.monotonic() + 5       # (record_lock_ms: 30 s)
        while len(got) < len(sent) and time.monotonic() < deadline:
            take(worker.poll(timeout_ms=100))
        worker.commit()
        worker.close()
        assert sorted(got) == sorted(sent)
