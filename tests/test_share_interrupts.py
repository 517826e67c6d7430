"""Ctrl-C landing inside a share consumer's calls, in a process that catches
it and goes on with the same consumer and Log (pylog.sharelock).

Each scenario runs in a child process whose faulthandler ends it (and
dumps its stacks) when a call hangs, so that a share-state lock left held
fails the test instead of hanging the suite. The deterministic tests raise
the KeyboardInterrupt where CPython handles a pending signal: at the
return of a C call (a profile function's ``c_return`` event) or at the
entry of a Python function (its ``call`` event); the timer test lets a
real SIGALRM raise it. Every test then checks that no record was lost:
each record of the topic was handed to the application by some poll.

Thread safety: each test owns its child and its directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

COMMON = r"""
import faulthandler, json, os, sys, threading, time
import pylog

faulthandler.dump_traceback_later(float(os.environ.get("HANG_S", "25")), exit=True)
root = sys.argv[1]
log = pylog.open(root, sync="never", metadata_timeout=1.0)
log.create_topic("t", partitions=2, exist_ok=True)
SHARE = ("sharestate.py", "sharelock.py")
seen = set()        # (partition, offset) handed to the application


def consumer():
    return log.share_consumer("t", group_id="g", auto_offset_reset="earliest",
                              acknowledgement_mode="implicit")


def within(fn, seconds=6.0):
    # fn() in another thread (as the Log's maintenance thread): what it
    # returned or raised, or "stuck" when it did not end in time
    out = []

    def run():
        try:
            out.append(repr(fn()))
        except Exception as exc:
            out.append(f"{type(exc).__name__}: {exc}")
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return out[0] if out else "stuck"


def drain_and_check(produced):
    # a fresh consumer takes what is left; every record was handed once at least
    w2 = consumer()
    for _ in range(50):
        got = w2.poll(timeout_ms=20)
        seen.update((r.partition, r.offset) for r in got)
        w2.commit()
    w2.close()
    ends = {p: log.partition("t", p).state().next_offset for p in range(2)}
    every = {(p, o) for p, end in ends.items() for o in range(end)}
    return sorted(every - seen), sum(ends.values())
"""

POINT = COMMON + r"""
op, point = sys.argv[2], sys.argv[3]
p = log.producer()
for i in range(40):
    p.send("t", b"%d" % i, partition=i % 2)
p.flush()
w = consumer()


def inject(frame, event, arg):
    # a Ctrl-C handled at the return of a thread lock's acquire, or at the
    # entry of the code that gives the share-state lock back
    if not frame.f_code.co_filename.endswith(SHARE):
        return
    if point == "acquire" and event == "c_return" and \
            getattr(arg, "__name__", "") == "acquire" or \
            point.startswith("exit") and event == "call" and \
            frame.f_code.co_name in ("__exit__", "unlock"):
        sys.setprofile(None)
        raise KeyboardInterrupt


# records held first; interrupted: the next poll (acquiring more) or the commit
seen.update((r.partition, r.offset) for r in w.poll(max_records=10))
if op == "poll":
    w.commit()
kept = None
sys.setprofile(inject)
try:
    got = w.poll(max_records=10) if op == "poll" else w.commit()
    print(json.dumps({"step": "not interrupted"}), flush=True)
    sys.exit(1)
except KeyboardInterrupt as exc:
    sys.setprofile(None)
    if point == "exit_kept":
        kept = exc          # its traceback keeps the holder: no finalizer runs
share = log.share_files()
# what the maintenance thread does at every interval: never blocked for good
print(json.dumps({"step": "checkpoint", "got": within(share.checkpoint)}), flush=True)
# the same thread goes on: the next poll, commit and close work
for _ in range(3):
    seen.update((r.partition, r.offset) for r in w.poll(max_records=10, timeout_ms=10))
    w.commit()
kept = None
print(json.dumps({"step": "after", "got": within(share.checkpoint)}), flush=True)
w.close()
lost, n = drain_and_check(40)
print(json.dumps({"step": "done", "lost": lost, "records": n}), flush=True)
log.close()
"""


def run(script: str, *args: str, timeout: float = 90) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          timeout=timeout)
    lines = [json.loads(ln) for ln in proc.stdout.decode().splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines and lines[-1]["step"] == "done", \
        (proc.returncode, lines, proc.stderr.decode()[-3000:])
    return lines


@pytest.mark.parametrize("op", ["poll", "commit"])
@pytest.mark.parametrize("point", ["acquire", "exit", "exit_kept"])
def test_interrupt_at_the_lock_leaves_it_free(tmp_path, op, point):
    """A KeyboardInterrupt handled right after the share-state lock's thread
    lock was taken (``acquire``), or at the entry of the code giving it back
    (``exit``; ``exit_kept``: with the interrupt's traceback kept alive):
    another thread's checkpoint is not blocked for good (it raises
    MetadataBusyError naming the lock while the interrupted holder's
    traceback lives), the next poll/commit/close of the same thread work,
    no commit raises AcknowledgementError, and no record is lost."""
    lines = run(POINT, str(tmp_path / "log"), op, point)
    steps = {ln["step"]: ln for ln in lines}
    got = steps["checkpoint"]["got"]
    if point == "exit_kept":
        assert got.startswith("MetadataBusyError") and "share-state lock" in got, got
    else:
        assert got != "stuck" and "Error" not in got, got
    assert steps["after"]["got"] != "stuck" and "Error" not in steps["after"]["got"], steps
    assert steps["done"]["lost"] == [] and steps["done"]["records"] == 40


UNSEEN = COMMON + r"""
# a Ctrl-C handled in poll() after it acquired records, before it returned
# them: implicit mode must not accept them at the next commit unseen
p = log.producer()
for i in range(40):
    p.send("t", b"%d" % i, partition=i % 2)
p.flush()
w = consumer()
calls = [0]


def inject(frame, event, arg):
    if event == "c_return" and frame.f_code.co_name == "poll" and \
            getattr(arg, "__name__", "") == "monotonic":
        calls[0] += 1
        if calls[0] == 2:       # the look at the clock after the acquisition
            sys.setprofile(None)
            raise KeyboardInterrupt


sys.setprofile(inject)
try:
    seen.update((r.partition, r.offset) for r in w.poll(max_records=10))
except KeyboardInterrupt:
    pass
sys.setprofile(None)
w.commit()
w.close()
lost, n = drain_and_check(40)
print(json.dumps({"step": "done", "lost": lost, "records": n}), flush=True)
log.close()
"""


def test_interrupted_poll_does_not_accept_records_unseen(tmp_path):
    """The records a poll acquired are accepted (implicit mode) only once
    the poll returned them: a Ctrl-C before leaves them held, released at
    close() and handed to the next consumer."""
    done = run(UNSEEN, str(tmp_path / "log"))[-1]
    assert done["lost"] == [] and done["records"] == 40, done


TIMER = COMMON + r"""
import signal
seconds = float(sys.argv[2])
p = log.producer()
w = consumer()
inside = False
landed = 0
errors = []


def ctrl_c(*_):
    if inside:
        raise KeyboardInterrupt


signal.signal(signal.SIGALRM, ctrl_c)
signal.setitimer(signal.ITIMER_REAL, 0.002, 0.006)
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        inside = True
        p.send("t", b"job")
        got = w.poll(timeout_ms=1)
        inside = False      # (no interrupt point since poll returned)
        seen.update((r.partition, r.offset) for r in got)
        inside = True
        w.commit()
        inside = False
    except KeyboardInterrupt:
        inside = False
        landed += 1
    except Exception as exc:
        inside = False
        errors.append(f"{type(exc).__name__}: {exc}"[:300])
signal.setitimer(signal.ITIMER_REAL, 0)
inside = False
p.flush()
w.close()
lost, n = drain_and_check(None)
print(json.dumps({"step": "done", "lost": lost[:20], "n_lost": len(lost), "records": n,
                  "landed": landed, "errors": errors[:5], "n_errors": len(errors)}),
      flush=True)
log.close()
"""


def test_timer_interrupts_leave_share_consumer_usable(tmp_path):
    """SIGALRM raising KeyboardInterrupt every 6 ms while a share consumer
    sends, polls and commits in a loop that catches it: the consumer
    closes (no lock left held: a hang fails the child), no commit raises
    AcknowledgementError, and every record sent is handed to the
    application once at least."""
    done = run(TIMER, str(tmp_path / "log"), "4")[-1]
    assert done["landed"] > 50, done
    assert done["n_errors"] == 0, json.dumps(done)
    assert done["n_lost"] == 0 and done["records"] > 0, done


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError])
def test_a_batch_not_applied_is_not_taken_for_applied(tmp_path, failure):
    """A commit cut short before it applied its accepts (a Ctrl-C, or an
    error such as a full disk) left them marked; their records' locks had
    ended and another consumer held them, and the retry took the batch
    for applied: commit() returned as if the accepts stood. It must
    raise AcknowledgementError, as the same commit does uninterrupted."""
    import time as _time

    import pylog
    from pylog import shareops as ops
    from pylog.errors import AcknowledgementError
    with pylog.open(str(tmp_path / "log"), sync="never") as log:
        log.create_topic("t")
        p = log.producer()
        p.send("t", b"a")
        p.send("t", b"b")
        c1 = log.share_consumer("t", group_id="g", auto_offset_reset="earliest",
                                record_lock_ms=1000)
        got1 = c1.poll(timeout_ms=500)
        assert [r.offset for r in got1] == [0, 1]
        _time.sleep(1.2)                        # c1's locks end
        c2 = log.share_consumer("t", group_id="g", auto_offset_reset="earliest")
        assert [r.offset for r in c2.poll(timeout_ms=500)] == [0, 1]
        for r in got1:
            c1.acknowledge(r, "accept")
        real = ops.apply_acks

        def once(*args, **kwargs):
            ops.apply_acks = real
            raise failure()
        ops.apply_acks = once
        try:
            with pytest.raises(failure):
                c1.commit()
        finally:
            ops.apply_acks = real
        with pytest.raises(AcknowledgementError):
            c1.commit()
        c2.close()
        c1.close()


def test_a_nested_use_from_a_handler_is_refused_and_keeps_the_hold(tmp_path):
    """Review: a signal handler or a __del__ that used a second share
    consumer of the same partition inside a poll's locked block was
    taken for a left-over hold: it dropped the poll's live hold, which
    went on changing the share state with no lock held. It is refused
    (InvalidArgument) and the poll keeps its hold."""
    import pylog
    from pylog import _native
    from pylog import shareops as ops
    from pylog.errors import InvalidArgument
    from pylog.records import TopicPartition
    with pylog.open(str(tmp_path / "log"), sync="never") as log:
        log.create_topic("t")
        p = log.producer()
        for i in range(10):
            p.send("t", b"%d" % i)
        w1 = log.share_consumer("t", group_id="g", auto_offset_reset="earliest")
        w2 = log.share_consumer("t", group_id="g", auto_offset_reset="earliest")
        w2.poll(max_records=1, timeout_ms=200)
        f = w1._file(TopicPartition("t", 0))
        seen: list[object] = []
        real = ops.acquire

        def nested(*args, **kwargs):
            ops.acquire = real
            try:
                w2.close()                  # as a handler run inside this call would
            except InvalidArgument as exc:
                seen.append(exc)
            fd2 = os.open(f.path, os.O_RDWR)    # another open file description
            try:
                free = _native.lock(fd2, 0, 1, "w", False)
                if free:
                    _native.lock(fd2, 0, 1, "u", False)
            finally:
                os.close(fd2)
            seen.append((f._lock._threads._is_owned(), free))
            return real(*args, **kwargs)
        ops.acquire = nested
        try:
            got = w1.poll(max_records=3, timeout_ms=200)
        finally:
            ops.acquire = real
        assert isinstance(seen[0], InvalidArgument), seen
        assert seen[1] == (True, False), "the poll's hold was dropped"
        assert [r.offset for r in got] == [1, 2, 3]
        w1.close()
        w2.close()


def test_a_thread_waits_while_the_holder_waits_for_another_process(tmp_path):
    """Review: thread A held the process's lock while it waited for the
    file lock another process held for 3 s; thread B's poll gave up after
    metadata_timeout (1 s) with MetadataBusyError blaming an interrupt.
    It waits as for the file lock itself."""
    import threading
    import time as _time

    import pylog
    from pylog.records import TopicPartition
    with pylog.open(str(tmp_path / "log"), sync="never", metadata_timeout=1.0) as log:
        log.create_topic("t")
        p = log.producer()
        for i in range(10):
            p.send("t", b"%d" % i)
        kw = dict(group_id="g", auto_offset_reset="earliest",
                  acknowledgement_mode="implicit")
        wa = log.share_consumer("t", **kw)
        wb = log.share_consumer("t", **kw)
        wa.poll(max_records=1)
        wb.poll(max_records=1)
        path = wa._file(TopicPartition("t", 0)).path
        holder = subprocess.Popen([sys.executable, "-c", f"""
import os, time
from pylog import _native
fd = os.open({path!r}, os.O_RDWR)
assert _native.lock(fd, 0, 1, "w", True)
print("held", flush=True)
time.sleep(2.5)
_native.lock(fd, 0, 1, "u", False)
"""], stdout=subprocess.PIPE, env=dict(os.environ))
        try:
            assert holder.stdout.readline().strip() == b"held"
            res: dict[str, object] = {}

            def run(name, w):
                try:
                    res[name] = [r.offset for r in w.poll(max_records=2, timeout_ms=8000)]
                except Exception as exc:       # (reported below)
                    res[name] = exc
            ta = threading.Thread(target=run, args=("A", wa))
            ta.start()
            _time.sleep(0.2)
            tb = threading.Thread(target=run, args=("B", wb))
            tb.start()
            ta.join(20)
            tb.join(20)
        finally:
            holder.wait(20)
        assert isinstance(res["A"], list) and isinstance(res["B"], list), res
        wa.close()
        wb.close()
