"""Group commit of sync="always" commits (pylog.commitgroup): a wait returns
only after a checkpoint that started after the commit was stored finished
(C-5), concurrent commits share checkpoints, and a failed checkpoint
raises in its leader while its other commits wait for a later one.

The checkpoint here is a callable that takes a snapshot of what was
stored and, after a pause standing for LMDB's fsyncs, marks it covered:
what the group coordinates, without LMDB; tests/test_commit_table.py
checks the real checkpoints (each commit in LMDB when commit() returns)."""

import threading
import time

import pytest

from pylog.commitgroup import CheckpointGroup

THREADS = 16
COMMITS = 100


class Store:
    """Commits stored, and those a finished checkpoint covered."""

    def __init__(self, fail_at=None):
        self.mu = threading.Lock()
        self.stored = set()
        self.covered = set()
        self.checkpoints = 0
        self.running = 0
        self.overlapped = False
        self.fail_at = fail_at

    def store(self, item):
        with self.mu:
            self.stored.add(item)

    def checkpoint(self):
        with self.mu:
            self.checkpoints += 1
            number = self.checkpoints
            self.running += 1
            self.overlapped |= self.running > 1
            snapshot = set(self.stored)
        time.sleep(0.0005)
        with self.mu:
            self.running -= 1
            if number == self.fail_at:
                raise OSError(5, "checkpoint failed")
            self.covered |= snapshot


def run(store, group, errors):
    def worker(i):
        for j in range(COMMITS):
            item = (i, j)
            store.store(item)
            try:
                group.wait(lambda: item in store.covered)
            except OSError as exc:
                errors.append((item, exc))
                continue
            assert item in store.covered, item
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_concurrent_commits_share_checkpoints():
    store = Store()
    group = CheckpointGroup(store.checkpoint)
    errors = []
    run(store, group, errors)
    assert not errors
    assert store.covered == {(i, j) for i in range(THREADS) for j in range(COMMITS)}
    assert not store.overlapped                  # one checkpoint at a time
    # shared: far fewer checkpoints than commits (one each without a group)
    assert store.checkpoints < THREADS * COMMITS / 4, store.checkpoints


def test_a_lone_committer_runs_its_own_checkpoint():
    store = Store()
    group = CheckpointGroup(store.checkpoint)
    for j in range(20):
        store.store(j)
        group.wait(lambda: j in store.covered)
        assert j in store.covered
    assert store.checkpoints == 20


@pytest.mark.parametrize("fail_at", [1, 3])
def test_a_failed_checkpoint_raises_in_its_leader_only(fail_at):
    """The leader of the failing checkpoint gets its error; the commits it
    would have covered wait for the next one instead of returning."""
    store = Store(fail_at=fail_at)
    group = CheckpointGroup(store.checkpoint)
    errors = []
    run(store, group, errors)
    assert len(errors) == 1, errors
    (failed_item, exc), = errors
    assert exc.errno == 5
    everything = {(i, j) for i in range(THREADS) for j in range(COMMITS)}
    # the failed commit is covered by a later checkpoint all the same (its
    # caller was told it failed and may retry: the offset is in the table)
    assert store.covered == everything


def test_a_leader_interrupted_before_its_checkpoint_hands_over():
    """A commit leading the next checkpoint is interrupted (Ctrl-C, a signal
    handler raising) while the previous checkpoint still runs: the
    interruption reaches it, and the commits after it still get
    checkpoints (before, the group waited for the abandoned leader
    forever)."""
    import signal
    runs = []

    def checkpoint():
        runs.append(1)
        time.sleep(0.5)                 # a slow checkpoint: LMDB fsyncs

    g = CheckpointGroup(checkpoint)
    first = threading.Thread(target=g.wait, args=(lambda: False,))
    first.start()                       # leads checkpoint 1
    deadline = time.monotonic() + 10
    while not runs and time.monotonic() < deadline:
        time.sleep(0.005)
    waiter_done = []
    # a commit that waits for checkpoint 2 behind this thread's lead
    joined = threading.Thread(target=lambda: (g.wait(lambda: False), waiter_done.append(1)),
                              daemon=True)

    def interrupt(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.15)
        threading.Timer(0.05, joined.start).start()
        with pytest.raises(KeyboardInterrupt):
            g.wait(lambda: False)       # leads checkpoint 2, behind 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    first.join(10)
    later = []
    t = threading.Thread(target=lambda: (g.wait(lambda: False), later.append(1)), daemon=True)
    t.start()
    t.join(10)
    joined.join(10)
    assert later == [1], "a commit after the interrupted leader never returned"
    assert waiter_done == [1], "the commit that joined the interrupted leader never returned"
