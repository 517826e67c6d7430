"""Log.metrics() and ``pylog metrics`` (issue 18): counters every process
adds to in partition.state (FORMAT.rst P-10, P-11), seen from another
process; rates from two readings; groups' lag and share groups' states;
the Prometheus exporter scraped over real HTTP."""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

import pylog
from pylog import TopicPartition
from pylog.errors import InvalidArgument
from pylog.metrics import FSYNC_BUCKET_BOUNDS_S, FsyncStats, MetricsSnapshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    return dict(os.environ, PYTHONPATH=ROOT)


def run_child(code, *args):
    """Run ``code`` in a fresh interpreter (a process of its own)."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                       capture_output=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


WORKLOAD = """
    import sys, pylog
    log = pylog.open(sys.argv[1], sync="always")
    if "t" not in log.topics():
        log.create_topic("t", partitions=2)
    p = log.producer()
    for i in range(int(sys.argv[2])):
        p.send("t", b"x" * 100, partition=i % 2)
    p.flush()
    c = log.consumer("t", group_id="readers", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    got = 0
    while got < int(sys.argv[3]):
        got += len(c.poll(timeout=1, max_records=int(sys.argv[3]) - got))
    c.commit()
    c.close(autocommit=False)
    log.close()
"""


def raw_counters(path, topic, p):
    """The P-10 and P-11 words as the file holds them (host byte order)."""
    with open(os.path.join(str(path), f"{topic}-{p}", "partition.state"), "rb") as f:
        raw = f.read(4096)
    append = struct.unpack_from("=3Q", raw, 144)
    fetch = struct.unpack_from("=2Q", raw, 192)
    fsync = struct.unpack_from("=2Q", raw, 256)
    buckets = struct.unpack_from("=16Q", raw, 272)
    return append, fetch, fsync, buckets


def test_counters_of_other_processes_are_seen(tmp_path):
    """P-10, P-11: a child appends (sync="always": an fdatasync per send)
    and consumes; this process, which did neither, sees its numbers, as
    the file's bytes hold them."""
    path = tmp_path / "log"
    run_child(WORKLOAD, path, 300, 120)
    with pylog.open(str(path), readonly=True) as log:
        snap = log.metrics()
    assert [(p.topic, p.partition) for p in snap.partitions] == [("t", 0), ("t", 1)]
    assert sum(p.appended_records for p in snap.partitions) == 300
    assert sum(p.append_batches for p in snap.partitions) == 300     # one send, one batch
    assert sum(p.fetched_records for p in snap.partitions) == 120
    for p in snap.partitions:
        assert p.end_offset == 150 and p.records == 150
        append, fetch, fsync, buckets = raw_counters(path, "t", p.partition)
        assert append == (p.append_batches, p.appended_records, p.appended_bytes)
        assert fetch == (p.fetches, p.fetched_records)
        assert fsync[0] == p.fsync.count and buckets == p.fsync.buckets
        # a batch of one 100-byte record is 61 + 8 + ~104 bytes on disk
        assert p.appended_bytes == p.bytes
        assert p.fsync.count >= 1 and sum(buckets) == p.fsync.count
        assert p.fsync.total_s > 0
        assert p.append_rate is None                 # one reading: no rates
    assert snap.fsync.count == sum(p.fsync.count for p in snap.partitions)
    assert snap.interval_s is None and snap.errors == ()


def test_counters_add_up_across_processes(tmp_path):
    """P-10: two writers in two processes at once; the counts add (no
    update lost: appends count under the append lock, fetches with atomic
    adds)."""
    path = tmp_path / "log"
    with pylog.open(str(path)) as log:
        log.create_topic("t", partitions=2)
    code = """
        import sys, pylog
        log = pylog.open(sys.argv[1], sync="never")
        p = log.producer()
        for i in range(2000):
            p.send("t", b"y", partition=0)
        log.close()
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(path)],
                              env=_env()) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with pylog.open(str(path), readonly=True) as log:
        p0 = log.metrics().partition("t", 0)
    assert p0.appended_records == p0.append_batches == p0.end_offset == 4000


def test_fsync_histogram_buckets(tmp_path):
    """P-11: bucket k counts latencies under 2**(16+k) ns; the bounds the
    snapshot reports are those."""
    assert FSYNC_BUCKET_BOUNDS_S[0] == 65536 / 1e9
    assert FSYNC_BUCKET_BOUNDS_S[14] == 2 ** 30 / 1e9
    assert FSYNC_BUCKET_BOUNDS_S[15] == float("inf") and len(FSYNC_BUCKET_BOUNDS_S) == 16
    from pylog import _native
    with pylog.open(str(tmp_path / "log")) as log:
        log.create_topic("h", partitions=1)
        shared = log.partition("h", 0).shared
        for ns in (0, 65535, 65536, 131071, 131072, 2 ** 30 - 1, 2 ** 30, 10 ** 12):
            _native.count_fsync(shared.ptr, ns)
        f = log.metrics().partition("h", 0).fsync
    assert f.buckets[:3] == (2, 2, 1) and f.buckets[14] == 1 and f.buckets[15] == 2
    assert f.count == 8 and f.total_s == pytest.approx(
        (65535 + 65536 + 131071 + 131072 + 2 ** 30 - 1 + 2 ** 30 + 10 ** 12) / 1e9)
    assert f.quantile(0.25) == FSYNC_BUCKET_BOUNDS_S[0]
    assert f.quantile(1.0) == float("inf")
    assert FsyncStats().quantile(0.5) is None and FsyncStats().mean_s is None
    with pytest.raises(ValueError):
        f.quantile(0)


def test_rates_from_two_readings(tmp_path):
    with pylog.open(str(tmp_path / "log"), sync="never") as log:
        log.create_topic("t", partitions=1)
        p = log.producer()
        p.send("t", b"first")
        before = log.metrics()
        for _ in range(500):
            p.send("t", b"z" * 10)
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        got = 0
        while got < 501:
            got += len(c.poll(timeout=1))
        time.sleep(0.05)
        after = log.metrics(since=before)
        c.close()
    a, b = before.partition("t", 0), after.partition("t", 0)
    assert after.interval_s == pytest.approx(after.monotonic - before.monotonic)
    assert b.append_rate == pytest.approx(500 / after.interval_s)
    assert b.append_bytes_rate == pytest.approx(
        (b.appended_bytes - a.appended_bytes) / after.interval_s)
    assert b.fetch_rate == pytest.approx(501 / after.interval_s)
    assert a.append_rate is None


def test_a_counter_that_went_down_counts_from_zero(tmp_path):
    """P-10: a topic deleted and created again starts new counters; the
    rate counts them from 0 instead of going negative."""
    with pylog.open(str(tmp_path / "log"), sync="never") as log:
        log.create_topic("t", partitions=1)
        p = log.producer()
        for _ in range(100):
            p.send("t", b"a")
        before = log.metrics()
        log.delete_topic("t")
        log.create_topic("t", partitions=1)
        for _ in range(10):
            p.send("t", b"b")
        after = log.metrics(since=before)
    part = after.partition("t", 0)
    assert part.appended_records == 10
    assert part.append_rate == pytest.approx(10 / after.interval_s)


def test_since_must_be_a_snapshot(tmp_path):
    with pylog.open(str(tmp_path / "log")) as log:
        with pytest.raises(InvalidArgument, match="MetricsSnapshot"):
            log.metrics(since={"not": "a snapshot"})


def _groups_and_queues(path):
    """A known workload: 600 records over 3 partitions; group "billing"
    read 120 from p0 and 80 from p1; share group "mailers" on topic "jobs"
    (10 records): 3 acquired and held, 2 rejected (archived), 1 released
    with a delay."""
    log = pylog.open(str(path), sync="never")
    log.create_topic("orders", partitions=3)
    log.create_topic("jobs", partitions=1)
    p = log.producer()
    for i in range(600):
        p.send("orders", b"o", partition=i % 3)
    for i in range(10):
        p.send("jobs", b"j%d" % i)
    p.flush()
    c = log.consumer("orders", group_id="billing", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    c.poll(timeout=0.5, max_records=1)
    c.commit({TopicPartition("orders", 0): 120, TopicPartition("orders", 1): 80})
    c.close(autocommit=False)
    s = log.share_consumer("jobs", group_id="mailers", auto_offset_reset="earliest")
    got = []
    while len(got) < 6:
        got += s.poll(timeout_ms=500, max_records=6 - len(got))
    s.acknowledge(got[0], "reject")
    s.acknowledge(got[1], "reject")
    s.acknowledge(got[2], "release", delay_ms=600_000)
    s.commit()
    return log, s


def test_group_and_share_group_metrics(tmp_path):
    log, s = _groups_and_queues(tmp_path / "log")
    try:
        snap = log.metrics()
    finally:
        s.close()
        log.close()
    g = snap.group("billing")
    assert g.lag == 400 and g.state == "Empty" and g.members == 0
    assert [(p.partition, p.committed, p.lag, p.lag_from) for p in g.partitions] == [
        (0, 120, 80, "committed"), (1, 80, 120, "committed"), (2, None, 200, "earliest")]
    q = snap.share_group("mailers")
    # 10 records: 3 still acquired, 2 archived, 1 delayed, 4 never delivered
    assert (q.acquired, q.archived, q.delayed, q.available) == (3, 2, 1, 4)
    assert q.partitions[0].topic == "jobs"
    d = snap.to_dict()
    assert json.loads(json.dumps(d)) == d          # plain JSON (no inf, no tuples)
    assert d["groups"][0]["lag"] == 400 and d["partitions"][0]["records"] == 10  # jobs-0


def test_a_dead_processs_partitions_and_records_are_not_shown_as_held(tmp_path):
    """A process that died holding a group's partitions and a work queue's
    records: the metrics named it the owner and counted its records as
    acquired, while the next poll of any member takes them (found by a
    user trial: ``pylog metrics`` and ``pylog top`` showed them in flight)."""
    path = str(tmp_path / "log")
    code = """
        import os, sys
        import pylog
        log = pylog.open(sys.argv[1], sync="never")
        log.create_topic("t", partitions=2)
        p = log.producer()
        for i in range(20):
            p.send("t", b"%d" % i, partition=i % 2)
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        assert len(c.poll(timeout_ms=5000)) == 20
        s = log.share_consumer("t", group_id="q", auto_offset_reset="earliest")
        assert len(s.poll(timeout_ms=5000, max_records=500)) == 20
        os._exit(0)                             # dies holding both
    """
    run_child(code, path)
    with pylog.open(path) as log:
        snap = log.metrics()
        assert [p.owner for p in snap.group("g").partitions] == [None, None]
        assert snap.group("g").members == 0
        q = snap.share_group("q")
        assert (q.acquired, q.available) == (0, 20)
        live = log.share_consumer("t", group_id="q")
        held = live.poll(timeout_ms=5000, max_records=5)
        assert len(held) == 5
        q = log.metrics().share_group("q")
        assert (q.acquired, q.available) == (5, 15)
        live.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port, deadline_s=30, host="127.0.0.1"):
    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
                return r.status, r.headers.get("Content-Type"), r.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def _samples(text):
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_exporter_scraped_over_http(tmp_path):
    """``pylog metrics LOG --serve`` in a process of its own, scraped with a
    real HTTP request: the values are the workload's, appends done by
    another process after the server started included."""
    pytest.importorskip("prometheus_client")
    path = tmp_path / "log"
    log, s = _groups_and_queues(path)
    s.close()
    log.close()
    run_child(WORKLOAD, path, 300, 0)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pylog.cli", "metrics", str(path), "--serve",
         f"127.0.0.1:{port}"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        status, ctype, text = _scrape(port)
        assert status == 200 and ctype.startswith("text/plain")
        m = _samples(text)

        def v(name, **labels):
            return m[(name, tuple(sorted(labels.items())))]
        assert v("pylog_partition_end_offset", topic="orders", partition="2") == 200
        assert v("pylog_appended_records_total", topic="t", partition="0") == 150
        assert v("pylog_group_lag", group="billing", topic="orders", partition="2") == 200
        assert v("pylog_group_lag_from", group="billing", topic="orders", partition="2",
                 pylog_group_lag_from="earliest") == 1
        assert v("pylog_group_committed_offset", group="billing", topic="orders",
                 partition="0") == 120
        assert ("pylog_group_committed_offset", (("group", "billing"),
                ("partition", "2"), ("topic", "orders"))) not in m
        assert v("pylog_up") == 1
        key = dict(group="mailers", topic="jobs", partition="0")
        assert v("pylog_share_records", state="delayed", **key) == 1
        assert v("pylog_share_archived_records_total", **key) == 2
        fsyncs = sum(val for (name, _), val in m.items() if name == "pylog_fsyncs_total")
        assert v("pylog_fsyncs_total", topic="t", partition="0") >= 1     # sync="always"
        assert v("pylog_fsync_seconds_count") == fsyncs
        assert v("pylog_fsync_seconds_bucket", le="+Inf") == fsyncs
        assert v("pylog_metrics_errors") == 0
        # every scrape reads anew: another process's appends show
        run_child(WORKLOAD, path, 40, 0)
        m = _samples(_scrape(port)[2])
        assert v("pylog_appended_records_total", topic="t", partition="0") == 170
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err.decode()
    assert b"serving the metrics" in out


def test_cli_metrics_text_and_json(tmp_path):
    path = tmp_path / "log"
    log, s = _groups_and_queues(path)
    s.close()
    log.close()
    r = subprocess.run([sys.executable, "-m", "pylog.cli", "metrics", str(path), "--json",
                        "--interval", "0.1"], capture_output=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    d = json.loads(r.stdout)
    assert d["interval_s"] > 0 and d["groups"][0]["lag"] == 400
    assert d["share_groups"][0]["archived"] == 2
    orders2 = [p for p in d["partitions"] if (p["topic"], p["partition"]) == ("orders", 2)]
    assert orders2[0]["end_offset"] == 200 and orders2[0]["append_rate"] == 0
    r = subprocess.run([sys.executable, "-m", "pylog.cli", "metrics", str(path),
                        "--interval", "0"], capture_output=True, env=_env(), timeout=60)
    out = r.stdout.decode()
    assert r.returncode == 0 and "one reading: no rates" in out
    assert "not committed, from earliest" in out and "SHARE GROUP" in out


@pytest.mark.parametrize("bad", ["-1", "nan", "inf"])
def test_cli_bad_interval(tmp_path, bad):
    with pylog.open(str(tmp_path / "log")):
        pass
    r = subprocess.run([sys.executable, "-m", "pylog.cli", "metrics", str(tmp_path / "log"),
                        "--interval", bad], capture_output=True, env=_env(), timeout=60)
    assert r.returncode == 2 and b"--interval" in r.stderr and b"Traceback" not in r.stderr


def test_exposition_of_a_snapshot(tmp_path):
    pytest.importorskip("prometheus_client")
    from pylog.metricsprom import exposition
    log, s = _groups_and_queues(tmp_path / "log")
    try:
        m = _samples(exposition(log.metrics()).decode())
    finally:
        s.close()
        log.close()
    assert m[("pylog_group_members", (("group", "billing"),))] == 0
    assert m[("pylog_share_records", (("group", "mailers"), ("partition", "0"),
                                      ("state", "acquired"), ("topic", "jobs")))] == 3


@pytest.mark.parametrize("bad", ["nonsense", "127.0.0.1:", ":9464", "127.0.0.1:99999"])
def test_cli_bad_serve_address(tmp_path, bad):
    with pylog.open(str(tmp_path / "log")):
        pass
    r = subprocess.run([sys.executable, "-m", "pylog.cli", "metrics", str(tmp_path / "log"),
                        "--serve", bad], capture_output=True, env=_env(), timeout=60)
    assert r.returncode == 2 and b"HOST:PORT" in r.stderr and b"Traceback" not in r.stderr


def test_cli_serve_without_the_extra_says_what_to_install(tmp_path):
    with pylog.open(str(tmp_path / "log")):
        pass
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "from pylog.cli import main\n"
            f"sys.exit(main(['metrics', {str(tmp_path / 'log')!r}, '--serve', "
            "'127.0.0.1:0']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=_env(),
                       timeout=60)
    assert r.returncode == 2, r.stderr.decode()
    assert b"pip install 'pylog[metrics]'" in r.stderr and b"Traceback" not in r.stderr


def test_snapshot_is_typed_and_immutable(tmp_path):
    with pylog.open(str(tmp_path / "log")) as log:
        log.create_topic("t", partitions=1)
        snap = log.metrics()
    assert isinstance(snap, MetricsSnapshot)
    with pytest.raises(AttributeError):
        snap.partitions = ()
    assert snap.partition("t", 9) is None and snap.group("x") is None


COUNT_OUT_OF_MAPS = """
    import errno, os, sys, pylog
    from pylog import handles
    path = sys.argv[1]
    with pylog.open(path, sync="never") as log:
        log.create_topic("t")
        log.producer().send("t", b"x")
        part = log.partition("t", 0)
        shared = part.shared
        assert log.handles.shrink(maps=True) > 0     # the state map dropped
        fd = os.open(os.path.join(path, "hog"), os.O_RDWR | os.O_CREAT)
        os.ftruncate(fd, 4096)
        hog = []
        try:
            while True:
                hog.append(handles.map_file(fd, 4096, writable=False))
        except OSError as exc:
            assert exc.errno == errno.ENOMEM, exc
        os.close(fd)
        outcome = []
        for count in (lambda: shared.count_fetch(1),
                      lambda: shared.synced(lambda: None)):
            try:
                count()
                outcome.append("ok")
            except Exception as exc:
                outcome.append(type(exc).__name__)
        del hog
        print(*outcome, flush=True)
"""


def test_counting_out_of_maps_never_raises(tmp_path):
    """P-10, P-11 are best effort: with the partition's state map dropped
    and no map left to make it again, counting a fetch (which runs after a
    consumer's cursor moved) or an fsync (after the fdatasync succeeded)
    skips the count instead of raising, which would report work already
    done as failed (the polled records would never be returned)."""
    assert run_child(COUNT_OUT_OF_MAPS, tmp_path / "log") == "ok ok\n"


def test_exporter_serves_on_an_ipv6_address(tmp_path):
    """``--serve [::1]:PORT``, as the option's help shows: wsgiref's
    server was IPv4 only and refused the address."""
    pytest.importorskip("prometheus_client")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.create_topic("t")
        log.producer().send("t", b"x")
    server = subprocess.Popen(
        [sys.executable, "-m", "pylog.cli", "metrics", str(path), "--serve",
         f"[::1]:{port}"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        status, _, text = _scrape(port, deadline_s=20, host="[::1]")
        assert status == 200
        assert _samples(text)[("pylog_partition_end_offset",
                               (("partition", "0"), ("topic", "t")))] == 1
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert server.returncode in (0, -15), err.decode()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_exporter_is_not_blocked_by_an_idle_connection(tmp_path, signum):
    """A client that connects and sends nothing (a port check, a half-open
    connection) blocked every later scrape of the single-threaded server,
    and SIGTERM could not stop it: shutdown() waited for the stuck request
    (found by a user trial). Each request has a thread of its own now."""
    pytest.importorskip("prometheus_client")
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.create_topic("t")
        log.producer().send("t", b"x")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pylog.cli", "metrics", str(path), "--serve",
         f"127.0.0.1:{port}"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    idle = None
    try:
        assert b"serving the metrics" in server.stdout.readline()
        idle = socket.create_connection(("127.0.0.1", port))
        time.sleep(0.3)
        start = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.status == 200
            assert b"pylog_partition_end_offset" in r.read()
        assert time.monotonic() - start < 5
        server.send_signal(signum)
        out, err = server.communicate(timeout=5)    # the idle client still connected
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
        if idle is not None:
            idle.close()
    assert server.returncode == 0, err.decode()
    assert b"stopped" in err and b"Traceback" not in err


def test_exporter_drops_a_connection_that_sends_nothing(tmp_path):
    """The per-connection timeout: a client that sends no request is
    disconnected, its thread freed."""
    pytest.importorskip("prometheus_client")
    import threading

    from pylog.metricsprom import make_server
    with pylog.open(tmp_path / "log") as log:
        server = make_server(log.metrics, "127.0.0.1", 0, timeout_s=0.5)
        t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        t.start()
        try:
            with socket.create_connection(server.server_address[:2], timeout=10) as idle:
                start = time.monotonic()
                assert idle.recv(1) == b""              # the server closed it
                assert 0.3 < time.monotonic() - start < 5
        finally:
            server.shutdown()
            server.server_close()
            t.join(10)


def test_idle_connections_past_the_cap_start_no_thread(tmp_path):
    """A review of the exporter: each connection got a thread of its own,
    with no bound; 200 clients that connect and idle held 200 threads.
    Past ``connections_max`` a connection is closed at once, and once the
    idle ones are gone a scrape is answered again."""
    pytest.importorskip("prometheus_client")
    import threading
    import urllib.request

    from pylog.metricsprom import make_server
    with pylog.open(tmp_path / "log") as log:
        server = make_server(log.metrics, "127.0.0.1", 0, timeout_s=30,
                             connections_max=4)
        t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        t.start()
        idle = []
        try:
            before = threading.active_count()
            idle = [socket.create_connection(server.server_address[:2], timeout=10)
                    for _ in range(40)]
            time.sleep(0.5)
            assert threading.active_count() - before <= 4
            closed = sum(s.recv(1) == b"" for s in idle[4:])
            assert closed == 36
            for s in idle:
                s.close()
            idle = []
            url = "http://127.0.0.1:%d/metrics" % server.server_address[1]
            for _ in range(50):     # (the 4 threads see their clients gone)
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        assert b"pylog_" in resp.read()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise AssertionError("no scrape answered after the idle clients left")
        finally:
            for s in idle:
                s.close()
            server.shutdown()
            server.server_close()
            t.join(10)


def test_the_exporter_shows_a_topic_another_process_made_again(tmp_path):
    """A user trial: ``pylog metrics --serve`` kept showing the old end
    offsets of a topic another process deleted and made again (or,
    started while a producer ran, dropped the topic for good). The
    exporter only watches its Log, so it drops the old topic's partitions
    (pylog.cli.runner.forget_replaced_topics) before each scrape."""
    pytest.importorskip("prometheus_client")
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.create_topic("t", partitions=2)
        log.producer().send_batch("t", [b"old"] * 10, partition=0)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pylog.cli", "metrics", str(path), "--serve",
         f"127.0.0.1:{port}"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def ends():
            m = _samples(_scrape(port)[2])
            return {dict(k[1])["partition"]: v for k, v in m.items()
                    if k[0] == "pylog_partition_end_offset" and dict(k[1])["topic"] == "t"}
        assert ends() == {"0": 10, "1": 0}
        with pylog.open(path) as log:
            log.delete_topic("t")
            log.create_topic("t", partitions=3)
            log.producer().send("t", b"new", partition=0)
        assert ends() == {"0": 1, "1": 0, "2": 0}
        assert _samples(_scrape(port)[2])[("pylog_metrics_errors", ())] == 0
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def _serve(path):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pylog.cli", "metrics", str(path), "--serve",
         f"127.0.0.1:{port}"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return port, server


def test_a_first_commit_makes_no_new_lag_series(tmp_path):
    """A label of a series must not change with the state: the lag's
    series (and where it counts from, a state set) are the same before a
    partition's first commit and after it; only their values change."""
    pytest.importorskip("prometheus_client")
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.create_topic("t", partitions=2)
        log.producer().send_batch("t", [b"x"] * 10, partition=0)
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=False)
        c.poll(timeout=0.5, max_records=1)
        # p1 committed (an Empty group without offsets is deleted, as
        # Kafka's), p0 never: its lag counts from earliest
        c.commit({TopicPartition("t", 1): 0})
        c.close(autocommit=False)
    port, server = _serve(path)
    try:
        def group_series():
            m = _samples(_scrape(port)[2])
            return {k: v for k, v in m.items() if k[0].startswith("pylog_group_lag")}
        before = group_series()
        with pylog.open(path) as log:
            log.meta.commit("g", {("t", 0): 4})
        after = group_series()
        assert set(before) == set(after)
        key = (("group", "g"), ("partition", "0"), ("topic", "t"))
        assert (before[("pylog_group_lag", key)], after[("pylog_group_lag", key)]) == (10, 6)
        state = ("pylog_group_lag_from", (("group", "g"), ("partition", "0"),
                                          ("pylog_group_lag_from", "committed"), ("topic", "t")))
        assert (before[state], after[state]) == (0, 1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)


def test_the_exporter_says_when_the_log_is_gone(tmp_path):
    """The log deleted under a running exporter: its scrapes answer
    ``pylog_up 0`` and nothing else (not the numbers of the files it
    still held), and it goes on serving."""
    pytest.importorskip("prometheus_client")
    import shutil
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.create_topic("t")
        log.producer().send_batch("t", [b"x"] * 10)
        log.meta.commit("g", {("t", 0): 3})
    port, server = _serve(path)
    try:
        m = _samples(_scrape(port)[2])
        assert m[("pylog_up", ())] == 1
        assert m[("pylog_group_lag", (("group", "g"), ("partition", "0"), ("topic", "t")))] == 7
        shutil.rmtree(path)
        for _ in range(2):
            status, _, text = _scrape(port)
            assert status == 200 and _samples(text) == {("pylog_up", ()): 0}
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0 and b"was deleted" in err, err
