"""``pylog top``: the view model (pure, from two snapshots), the drawing, and
the live command through a real pseudo-terminal: it draws, updates when
another process appends, exits 0 on q and on Ctrl-C, and leaves the
terminal's termios settings as it found them — with rich and in plain text.
"""

import re
import subprocess
import sys

import pytest
from ptyproc import PtyProcess, strip_ansi

import pylog
from pylog.cli.topdraw import bar, plain_lines
from pylog.cli.topmodel import GroupSnap, QueueSnap, Snapshot, build_view, take_snapshot

ALT_ON, ALT_OFF, HIDE, SHOW = "\x1b[?1049h", "\x1b[?1049l", "\x1b[?25l", "\x1b[?25h"


# ---------------------------------------------------------------------------
# the view model
# ---------------------------------------------------------------------------

def _snap(at, ends, committed=None, queues=(), starts=None):
    return Snapshot(at=at, path="/log", ends=dict(ends),
                    starts=dict(starts or {}), sizes={t: 100 for t, _ in ends},
                    groups=[GroupSnap("g", "Stable", 1, dict(committed or {}),
                                      sum(ends[tp] - c for tp, c in (committed or {}).items()))],
                    queues=list(queues))


def _q(partition, spso, archived=3, age=None):
    return QueueSnap("workers", "jobs", partition, spso, available=4, acquired=2,
                     delayed=1, archived=archived, oldest_age_ms=age)


def test_the_first_view_has_no_rates():
    v = build_view(None, _snap(10.0, {("t", 0): 50}, {("t", 0): 10}), 1.0)
    assert v.topics[0].produce_rate is None and v.topics[0].consume_rate is None
    assert v.groups[0].consume_rate is None
    assert (v.topics[0].end, v.topics[0].records, v.groups[0].lag) == (50, 50, 40)


def test_rates_come_from_offset_deltas_over_the_time_between_snapshots():
    a = _snap(10.0, {("t", 0): 100, ("t", 1): 0}, {("t", 0): 40, ("t", 1): 0},
              [_q(0, 5)])
    b = _snap(12.0, {("t", 0): 300, ("t", 1): 100}, {("t", 0): 140, ("t", 1): 20},
              [_q(0, 25)])
    v = build_view(a, b, 2.0)
    t = v.topics[0]
    assert (t.name, t.partitions, t.end) == ("t", 2, 400)
    assert t.produce_rate == pytest.approx(150.0)       # 300 records in 2 s
    assert t.consume_rate == pytest.approx(60.0)        # 120 committed in 2 s
    assert v.groups[0].consume_rate == pytest.approx(60.0)
    assert v.queues[0].done_rate == pytest.approx(10.0)  # SPSO 5 -> 25


def test_a_topic_consumed_by_a_work_queue_has_a_consume_rate():
    """Share groups count in the topic's consume rate, as consumer groups
    do (the queue's SPSO moved 20, the group's committed offset 120)."""
    a = _snap(10.0, {("jobs", 0): 300}, {("jobs", 0): 40}, [_q(0, 5)])
    b = _snap(12.0, {("jobs", 0): 300}, {("jobs", 0): 160}, [_q(0, 25)])
    t = build_view(a, b, 2.0).topics[0]
    assert t.consume_rate == pytest.approx(70.0)        # (120 + 20) in 2 s


def test_partitions_seen_once_and_offsets_that_went_back_add_no_rate():
    # a topic created between the snapshots (its first records are not a
    # one-second burst), and a group reset to an earlier offset
    a = _snap(0.0, {("old", 0): 100}, {("old", 0): 90})
    b = _snap(1.0, {("old", 0): 100, ("new", 0): 5000}, {("old", 0): 0})
    v = build_view(a, b, 1.0)
    rates = {t.name: (t.produce_rate, t.consume_rate) for t in v.topics}
    assert rates == {"new": (0.0, 0.0), "old": (0.0, 0.0)}


def test_lag_fraction_is_of_the_records_kept():
    s = _snap(0.0, {("t", 0): 1000}, {("t", 0): 750}, starts={("t", 0): 500})
    g = build_view(None, s, 1.0).groups[0]
    assert g.lag == 250 and g.lag_fraction == pytest.approx(0.5)
    assert bar(g.lag_fraction, 10) == "#####....."


def test_queues_sum_their_partitions_and_say_when_dead_letters_are_unknown():
    s = _snap(0.0, {("jobs", 0): 9, ("jobs", 1): 9},
              queues=[_q(0, 1, archived=3, age=1500), _q(1, 1, archived=4, age=200)])
    q = build_view(None, s, 1.0).queues[0]
    assert (q.partitions, q.available, q.in_flight, q.delayed, q.dead, q.oldest_age_ms) == \
        (2, 8, 4, 2, 7, 1500)
    s = _snap(0.0, {("jobs", 0): 9}, queues=[_q(0, 1, archived=3), _q(1, 1, archived=None)])
    assert build_view(None, s, 1.0).queues[0].dead is None


def test_plain_lines_fit_the_screen():
    s = _snap(0.0, {(f"topic{i:02}", 0): i for i in range(30)})
    v = build_view(None, s, 1.0)
    full = plain_lines(v, "12:00:00")
    assert any(ln.startswith("topic29") for ln in full)
    cut = plain_lines(v, "12:00:00", width=30, height=12)
    assert len(cut) == 12 and all(len(ln) <= 30 for ln in cut)
    assert cut[-1].startswith(f"... {len(full) - 11} more lines")


def test_a_snapshot_of_a_real_log(tmp_path):
    with pylog.open(tmp_path / "log", sync="never") as log:
        log.create_topic("orders", partitions=2)
        log.create_topic("jobs", partitions=1)
        p = log.producer()
        p.send_batch("orders", [b"x"] * 40)
        p.send_batch("jobs", [b"j1", b"j2", b"j3"])
        p.flush()
        with log.consumer("orders", group_id="billing",
                          auto_offset_reset="earliest") as c:
            got = 0
            while got < 10:
                got += len(c.poll(timeout_ms=1000, max_records=10 - got))
            c.commit()
        with log.share_consumer("jobs", group_id="workers",
                                auto_offset_reset="earliest") as w:
            recs = w.poll(timeout_ms=1000, max_records=1)
            w.acknowledge(recs[0], "reject")
            w.commit()
        snap = take_snapshot(log, 0.0)
    assert sum(e for (t, _), e in snap.ends.items() if t == "orders") == 40
    assert [(g.name, g.lag) for g in snap.groups] == [("billing", 30)]
    (q,) = snap.queues
    assert (q.group, q.topic, q.archived) == ("workers", "jobs", 1)
    v = build_view(None, snap, 1.0)
    assert [t.name for t in v.topics] == ["jobs", "orders"]
    assert v.queues[0].dead == 1


def test_a_dead_consumers_records_are_available_as_in_the_metrics(tmp_path):
    """A share consumer SIGKILLed (here: os._exit) holding records: the next
    poll of any member takes them, and log.metrics() counts them available,
    but ``pylog top`` counted them IN FLIGHT (found by a user trial). Both
    now count them the same way (pylog.metrics.share_counts)."""
    path = str(tmp_path / "log")
    child = """if True:
        import os, sys
        import pylog
        log = pylog.open(sys.argv[1], sync="never")
        log.create_topic("q", partitions=1)
        log.producer().send_batch("q", [b"j"] * 10, partition=0)
        s = log.share_consumer("q", group_id="sq", auto_offset_reset="earliest")
        assert len(s.poll(timeout_ms=5000, max_records=4)) == 4
        os._exit(0)                                  # dies holding 4 records
    """
    r = subprocess.run([sys.executable, "-c", child, path], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with pylog.open(path, readonly=True) as log:
        m = log.metrics().share_group("sq")
        q = build_view(None, take_snapshot(log, 0.0), 1.0).queues[0]
    assert (m.available, m.acquired) == (10, 0)
    assert (q.available, q.in_flight) == (m.available, m.acquired)
    out = subprocess.run([sys.executable, "-m", "pylog.cli", "top", path, "-n", "1"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    (row,) = [ln.split() for ln in out.stdout.splitlines() if ln.startswith("sq ")]
    assert row[:5] == ["sq", "q", "1", "10", "0"]     # AVAILABLE 10, IN FLIGHT 0


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------

def _log(tmp_path, records=100):
    path = str(tmp_path / "log")
    with pylog.open(path, sync="never") as log:
        log.create_topic("orders", partitions=1)
        log.producer().send_batch("orders", [b"o"] * records)
    return path


def _frames(out: str) -> list[str]:
    return strip_ansi(out).split("pylog top  ")[1:]


def _orders(frame: str):
    """(END, PRODUCE/s) of the orders row of a frame, None if not drawn."""
    m = re.search(r"\borders\s+1\s+(\d+)\s+\d+\s+\S+ \S+\s+(\S+)", frame)
    return (int(m.group(1)), m.group(2)) if m else None


def test_one_snapshot_as_text_when_stdout_is_no_terminal(tmp_path):
    path = _log(tmp_path)
    out = subprocess.run([sys.executable, "-m", "pylog.cli", "top", path, "-n", "2",
                          "--interval", "0.1"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    frames = _frames(out.stdout)
    assert len(frames) == 2
    assert _orders(frames[0]) == (100, "-") and _orders(frames[1]) == (100, "0.0")


def test_a_bad_interval_is_refused(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pylog.cli", "top", _log(tmp_path),
                          "--interval", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "out of range" in out.stderr


@pytest.fixture(params=["rich", "plain", "rich-missing"])
def mode(request, tmp_path):
    """(extra argv, environment) of a way to draw."""
    pytest.importorskip("rich") if request.param == "rich" else None
    if request.param == "plain":
        return ["--plain"], {}
    if request.param == "rich":
        return [], {}
    shadow = tmp_path / "shadow" / "rich"         # ``import rich`` fails
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    return [], {"PYTHONPATH": str(shadow.parent)}


def _top(path, mode, job_control=False):
    argv, env = mode
    return PtyProcess(["-m", "pylog.cli", "top", path, "--interval", "0.3", *argv], env=env,
                      job_control=job_control)


def _restored(t: PtyProcess, rich: bool) -> None:
    assert t.termios_after() == t.termios_before
    out = t.output
    assert out.rfind(ALT_OFF) > out.rfind(ALT_ON) >= 0
    assert out.rfind(SHOW) > out.rfind(HIDE) >= 0
    # rich draws tables without the plain renderer's dashed rules
    assert ("-----" in strip_ansi(out)) is not rich


def test_top_draws_updates_and_quits_on_q(tmp_path, mode):
    path = _log(tmp_path)
    with _top(path, mode) as t:
        t.expect(lambda o: any(_orders(f) for f in _frames(o)))
        # another process appends between two refreshes
        prod = subprocess.run([sys.executable, "-m", "pylog.cli", "produce", path,
                               "orders", "-q"], input="x\n" * 250, text=True,
                              capture_output=True, timeout=60)
        assert prod.returncode == 0, prod.stderr
        out = t.expect(lambda o: any((_orders(f) or (0,))[0] == 350 for f in _frames(o)))
        first = next(_orders(f) for f in _frames(out) if (_orders(f) or (0,))[0] == 350)
        assert float(first[1]) > 0            # the produce rate saw the records
        t.send(b"q")
        assert t.wait() == 0
        _restored(t, rich=mode == ([], {}))


def test_top_quits_on_ctrl_c(tmp_path, mode):
    path = _log(tmp_path)
    with _top(path, mode) as t:
        t.expect(lambda o: len(_frames(o)) >= 2)
        t.send(b"\x03")                       # the line discipline's SIGINT
        assert t.wait() == 0
        _restored(t, rich=mode == ([], {}))
        assert "Traceback" not in t.output and "interrupted" not in t.output


def test_a_missing_log_is_one_line_and_no_screen_change(tmp_path):
    with PtyProcess(["-m", "pylog.cli", "top", str(tmp_path / "nope")]) as t:
        assert t.wait() == 2
        assert ALT_ON not in t.output and "no such file or directory" in t.output
        assert t.termios_after() == t.termios_before


def test_lag_fraction_counts_partitions_reported_without_a_commit():
    # describe_group may report a partition the group never committed (its
    # lag counted from where the group would start): its records count too
    s = Snapshot(at=0.0, path="/log", ends={("t", 0): 100, ("t", 1): 100},
                 groups=[GroupSnap("g", "Empty", 0, {("t", 0): 100}, 100,
                                   (("t", 0), ("t", 1)))])
    assert build_view(None, s, 1.0).groups[0].lag_fraction == pytest.approx(0.5)


def test_sigterm_restores_the_terminal(tmp_path):
    import signal
    with _top(_log(tmp_path), (["--plain"], {})) as t:
        t.expect(lambda o: len(_frames(o)) >= 1)
        t.proc.send_signal(signal.SIGTERM)
        assert t.wait() == 128 + signal.SIGTERM
        _restored(t, rich=False)


def test_ctrl_z_gives_the_terminal_back_until_fg(tmp_path, mode):
    import os
    import signal
    import time
    with _top(_log(tmp_path), mode, job_control=True) as t:
        t.expect(lambda o: len(_frames(o)) >= 1)
        pid = t.command_pid
        t.send(b"\x1a")                       # the line discipline's SIGTSTP
        deadline = time.monotonic() + 20
        while _state(pid) != "T":
            assert time.monotonic() < deadline, "not stopped"
            time.sleep(0.05)
        assert t.termios_after() == t.termios_before     # sane while stopped
        # (written before it stopped; the pty may hand them over a little later)
        t.expect(lambda o: o.rfind(ALT_OFF) > o.rfind(ALT_ON)
                 and o.rfind(SHOW) > o.rfind(HIDE))
        drawn = len(_frames(t.output))
        os.kill(pid, signal.SIGCONT)          # what the shell's fg sends
        t.expect(lambda o: len(_frames(o)) >= drawn + 2)   # draws again
        assert t.termios_after() != t.termios_before     # cbreak again
        t.send(b"q")
        assert t.wait() == 0
        _restored(t, rich=mode == ([], {}))


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("term", ["dumb", ""])
def test_a_terminal_that_cannot_move_its_cursor_gets_lines(tmp_path, term):
    """TERM=dumb (or none: an editor's shell buffer): rich's live display
    drew nothing there at all; each refresh is now printed as lines,
    without cursor or screen codes, and q still quits."""
    path = _log(tmp_path)
    with PtyProcess(["-m", "pylog.cli", "top", path, "--interval", "0.3"],
                    env={"TERM": term}) as t:
        t.expect(lambda o: len(_frames(o)) >= 2 and _orders(_frames(o)[0]))
        t.send(b"q")
        assert t.wait() == 0
        assert "\x1b[" not in t.output
        assert t.termios_after() == t.termios_before


@pytest.mark.parametrize("argv", [[], ["--plain"]], ids=["rich", "plain"])
def test_group_names_cannot_write_to_the_terminal(tmp_path, argv):
    """A group id with an ESC sequence cleared and coloured the operator's
    terminal, one with a newline forged a row (found by a user trial):
    both are escaped in the live view, drawn by rich or as plain text."""
    if not argv:
        pytest.importorskip("rich")
    path = _log(tmp_path)
    with pylog.open(path, sync="never") as log:
        for g in ("esc\x1b[2J\x1b[31mRED", "evil\nFAKE-GROUP"):
            c = log.consumer(group_id=g, enable_auto_commit=False)
            c.assign([pylog.TopicPartition("orders", 0)])
            c.commit({pylog.TopicPartition("orders", 0): 3})
            c.close(autocommit=False)
    with _top(path, (argv, {})) as t:
        out = t.expect(lambda o: "esc\\x1b[2J\\x1b[31mRED" in o and "evil\\nFAKE-GROUP" in o)
        t.send(b"q")
        assert t.wait() == 0
    assert "\x1b[2J\x1b[31mRED" not in out
    assert not any(ln.startswith("FAKE-GROUP") for ln in strip_ansi(out).splitlines())


def test_a_topic_made_again_is_not_compared_with_the_old_one():
    """Deleted and made again between two snapshots (another id): the new
    topic's offsets are not progress past the old one's (5000 records
    against 100 is no 4,900-record burst); the next interval has rates
    again."""
    a = _snap(0.0, {("t", 0): 100}, {("t", 0): 90})
    b = _snap(1.0, {("t", 0): 5000}, {("t", 0): 4000})
    c = _snap(2.0, {("t", 0): 5200}, {("t", 0): 4100})
    a.ids["t"], b.ids["t"], c.ids["t"] = "old", "new", "new"
    t = build_view(a, b, 1.0).topics[0]
    assert (t.produce_rate, t.consume_rate) == (0.0, 0.0)
    assert build_view(a, b, 1.0).groups[0].consume_rate == 0.0
    t = build_view(b, c, 1.0).topics[0]
    assert (t.produce_rate, t.consume_rate) == (200.0, 100.0)


_WRITER = """
import sys, pylog
log = pylog.open(sys.argv[1], sync="never")
log.create_topic("t")
p = log.producer()
for line in sys.stdin:
    p.send_batch("t", [b"x"] * int(line))
    print("sent", flush=True)
log.close()
"""


def test_a_read_only_log_sees_a_writer_appends_to_a_topic_made_later(tmp_path, child_env):
    """A read-only Log (pylog top, the exporter) opened before any writer,
    then a partition made and appended to by a writer that holds the log:
    each look shows the writer's appends at once, not the end the
    partition had when first opened for up to a second."""
    from childproc import expect, start
    path = tmp_path / "log"
    pylog.open(path).close()
    ro = pylog.open(path, readonly=True)
    w = start(_WRITER, path, env=child_env, stdin=subprocess.PIPE)
    try:
        w.stdin.write(b"10\n")
        w.stdin.flush()
        expect(w, b"sent")
        assert ro.describe_topic("t").partition_info[0].end_offset == 10
        for n in (20, 30):
            w.stdin.write(b"10\n")
            w.stdin.flush()
            expect(w, b"sent")
            assert ro.describe_topic("t").partition_info[0].end_offset == n
    finally:
        w.stdin.close()
        w.wait(30)
        ro.close()
