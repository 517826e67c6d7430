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
from metaholder import end_holder, start_stopped_holder

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


def test_closed_share_consumers_leave_no_descriptors(logdir):
    """A share consumer's close gives back its share files' descriptors
    and maps (the Log kept every one open until it closed: 300 consumers
    of distinct groups over 4 partitions held 2,400 descriptors, 1,200
    maps and 80 MB), while the state stays: a consumer of a group made
    again later resumes where the group was."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("jobs", partitions=4)
        log.producer().send_batch("jobs", [b"job"] * 8, partition=0)

        def one(group):
            with log.share_consumer("jobs", group_id=group, auto_offset_reset="earliest",
                                    acknowledgement_mode="implicit") as worker:
                got = worker.poll(timeout_ms=0, max_records=3)
                worker.commit()
                return [r.offset for r in got]

        assert one("g-first") == [0, 1, 2]
        before = open_fds()
        for i in range(60):
            one(f"g{i}")
        assert open_fds() <= before + 2
        assert len(log.share_files()._files) == 0
        # what the group accepted stays accepted
        assert one("g-first") == [3, 4, 5]
        log.checkpoint_commits()
    with pylog.open(logdir, sync="never") as log:
        with log.share_consumer("jobs", group_id="g-first") as worker:
            assert [r.offset for r in worker.poll(timeout_ms=0)] == [6, 7]
            worker.commit()


@pytest.mark.parametrize("spare", [0, 1])     # (1: the liveness probe opens)
def test_share_views_out_of_descriptors_raise(logdir, spare):
    """Reading a share file for a view (share_groups, pylog queues, the
    live-consumer check of alter_share_group) out of descriptors raised
    nothing: the file counted as missing, so the views showed the LMDB
    copy ("-" for archived and lost) and alter_share_group found no live
    consumer and changed the settings under one."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("jobs", partitions=2)
        log.producer().send_batch("jobs", [b"job"] * 4, partition=0)
        worker = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest")
        assert len(worker.poll(timeout_ms=100)) == 4          # held: a live consumer
        rows = log.share_groups()
        hog = UsedUp(8, spare)
        try:
            with pytest.raises(TooManyOpenFilesError):
                log.alter_share_group("w", record_lock_ms=1000)
            with pytest.raises(TooManyOpenFilesError):
                log.share_groups()
        finally:
            hog.free()
        assert len(log.share_groups()) == len(rows)
        with pytest.raises(pylog.GroupNotEmpty):
            log.alter_share_group("w", record_lock_ms=1000)
        worker.close()


def test_share_view_out_of_descriptors_closes_its_probe(logdir):
    """share_groups() out of descriptors at a share file's read (its
    liveness probe took the last one) raised, but left the probe open:
    each call kept one more descriptor, so the process stayed out of them."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("jobs", partitions=1)
        log.producer().send_batch("jobs", [b"job"] * 2)
        worker = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest")
        assert len(worker.poll(timeout_ms=100)) == 2
        hog = UsedUp(8, 1)
        try:
            with pytest.raises(TooManyOpenFilesError, match="read the share state"):
                log.share_groups()
            os.close(os.open(os.devnull, os.O_RDONLY))      # the spare is free again
        finally:
            hog.free()
        worker.close()


CHILD_ACCEPTS_AND_DIES = """
import os, signal, sys
import pylog
log = pylog.open(sys.argv[1], sync="never", sync_interval_ms=3600000)
worker = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest")
for r in worker.poll(timeout_ms=1000):
    worker.acknowledge(r, "accept")
worker.commit()          # applied in the share file; LMDB has no copy yet
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("spare", [1, 2, 3])
def test_share_file_opened_out_of_descriptors_keeps_its_state(logdir, child_env, spare):
    """The boot id was read from /proc at every share file open: out of
    descriptors it read as "no boot id", the file looked like another
    boot's and was cut and rebuilt from LMDB, so acknowledgements a killed
    process had applied (not yet checkpointed) were undone and their
    records delivered again."""
    import subprocess
    import sys
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("jobs", partitions=1)
        log.producer().send_batch("jobs", [b"job"] * 4)
    subprocess.run([sys.executable, "-c", CHILD_ACCEPTS_AND_DIES, logdir], env=child_env,
                   timeout=60)
    with pylog.open(logdir, sync="never") as log:
        worker = log.share_consumer("jobs", group_id="w")
        log.partition("jobs", 0).reader.close()
        log.handles.shrink()
        hog = UsedUp(16, spare)
        try:
            worker.poll(timeout_ms=0)
        except TooManyOpenFilesError:
            pass
        finally:
            hog.free()
        assert worker.poll(timeout_ms=100) == []     # all four were accepted
        worker.close()


def test_close_with_the_metadata_busy_keeps_the_file_for_later(logdir, child_env, caplog):
    """The last consumer's close checkpoints its share files before closing
    them; with another process stopped inside a metadata transaction that
    checkpoint fails (MetadataBusyError): close() still returns, the file
    stays open, and the Log's next checkpoint stores and closes it."""
    with pylog.open(logdir, sync="never", metadata_timeout=0.3) as log:
        log.create_topic("jobs", partitions=1)
        log.producer().send_batch("jobs", [b"job"] * 3)
        worker = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest",
                                    acknowledgement_mode="implicit")
        assert len(worker.poll(timeout_ms=100)) == 3
        worker.commit()
        child = start_stopped_holder(logdir, child_env)
        fds = open_fds()
        try:
            # a change after the holder stopped: the Log's periodic
            # checkpoint may have stored the state before
            log.producer().send("jobs", b"job")
            assert len(worker.poll(timeout_ms=1000)) == 1
            worker.close()                      # does not raise
            assert "kept open for the next checkpoint" in caplog.text
            assert open_fds() == fds
        finally:
            end_holder(child)
        log.checkpoint_commits()
        assert open_fds() == fds - 2            # the file's descriptor and its map's
    with pylog.open(logdir, sync="never") as log:
        with log.share_consumer("jobs", group_id="w") as again:
            # the state reached LMDB: 0-2 accepted, 3 released at close
            assert [(r.offset, r.delivery_count) for r in again.poll(timeout_ms=50)] \
                == [(3, 2)]


def test_share_file_whose_registration_failed_is_closed_later(logdir, child_env):
    """A new group's share file opened, then its registration in the
    metadata failed (MetadataBusyError: another process stopped inside a
    metadata transaction): the file stayed counted as used by a consumer
    that never got it, so it was never closed — not by the consumer's
    close, nor by any checkpoint — until the Log closed."""
    with pylog.open(logdir, sync="never", metadata_timeout=0.3) as log:
        log.create_topic("jobs", partitions=1)
        log.producer().send_batch("jobs", [b"job"] * 3)
        worker = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest",
                                    acknowledgement_mode="implicit")
        child = start_stopped_holder(logdir, child_env)
        try:
            with pytest.raises(pylog.MetadataBusyError):
                worker.poll(timeout_ms=0)
        finally:
            end_holder(child)
        assert len(worker.poll(timeout_ms=100)) == 3
        fds = open_fds()
        worker.close()
        log.checkpoint_commits()
        assert log.share_files()._files == {}
        assert open_fds() < fds                 # the file's descriptor closed


LOCK_HOLDER = r"""
import sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
worker = log.share_consumer("tx", group_id="gx")
f = worker._file(pylog.TopicPartition("tx", 0))
with f.locked():
    print("holding", flush=True)
    time.sleep(3600)
"""


def test_a_share_file_locked_elsewhere_stalls_no_other_groups_close(logdir, child_env):
    """A checkpoint waits for the lock of each share file it copies, which
    another process may hold long (stopped, or at a dead-letter copy's
    fdatasync). Checkpoints and the closes of share files were serialized
    by one lock of the Log: a checkpoint (the Log's maintenance thread's)
    waiting for group gx's file kept every other share consumer of the Log
    — of another group, another topic — from closing until that process let
    go (0.01 s before)."""
    import subprocess
    import sys
    import threading

    import childproc
    with pylog.open(logdir, sync="never", sync_interval_ms=3_600_000) as log:
        log.create_topic("tx")
        log.create_topic("ty")
        log.producer().send_batch("tx", [b"x"] * 3)
        log.producer().send_batch("ty", [b"y"] * 3)
        cx = log.share_consumer("tx", group_id="gx", auto_offset_reset="earliest")
        assert len(cx.poll(timeout_ms=100)) == 3        # gx's file changed
        cy = log.share_consumer("ty", group_id="gy", auto_offset_reset="earliest",
                                acknowledgement_mode="implicit")
        assert len(cy.poll(timeout_ms=100)) == 3
        cy.commit()
        child = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, logdir],
                                 env=child_env, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL)
        try:
            childproc.expect(child, b"holding")
            maint = threading.Thread(target=log.checkpoint_commits, daemon=True)
            maint.start()
            time.sleep(0.3)                 # (waiting for gx's file's lock)
            closer = threading.Thread(target=cy.close, daemon=True)
            closer.start()
            closer.join(10)
            assert not closer.is_alive()
            assert maint.is_alive()         # (still waiting: the child holds on)
        finally:
            child.kill()
            child.wait(10)
            child.stdout.close()
        maint.join(10)
        assert not maint.is_alive()
        cx.close()
        log.checkpoint_commits()
        assert log.share_files()._files == {}
    with pylog.open(logdir, sync="never") as log:
        with log.share_consumer("ty", group_id="gy") as again:
            assert again.poll(timeout_ms=50) == []     # gy's accepts were stored


def test_a_record_given_back_at_its_delivery_limit_is_not_delivered_again(logdir):
    """A poll acquires a record for the last delivery its limit allows,
    then cannot read it (out of descriptors): given back, it is not handed
    out a time more (delivery_count over delivery_limit) but archived as
    a record whose lock ended at the limit is."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("jobs", partitions=1)
        log.producer().send("jobs", b"job")
        worker = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest",
                                    delivery_limit=2, dead_letter_topic="jobs.dlq")
        worker.open_files()
        (first,) = worker.poll(timeout_ms=0)
        assert first.delivery_count == 1
        worker.acknowledge(first, "release")
        worker.commit()
        log.partition("jobs", 0).reader.close()     # the next read must open it
        log.handles.shrink()
        log.partition("jobs", 0).state()            # (mapped again: the poll gets past it)
        hog = UsedUp(32, 0)
        try:
            with pytest.raises(TooManyOpenFilesError):
                worker.poll(timeout_ms=0)           # acquired (2 of 2), not read
        finally:
            hog.free()
        again = worker.poll(timeout_ms=200)
        assert [r.delivery_count for r in again] == []
        worker.close()
        dead = log.consumer("jobs.dlq", auto_offset_reset="earliest").poll(timeout=1.0)
        assert [r.value for r in dead] == [b"job"]
