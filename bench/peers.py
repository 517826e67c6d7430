"""Peers for bench/compare.py: pylog and the stores it is compared with.

Every peer has the same interface:

    peer.setup(dirpath, durable, threads=1)
        durable: "none"   -- no fsync at all
                 "batch"  -- one fsync per produce_batch() + sync() pair
                 "record" -- produce_one() returns only once the record is durable
    peer.produce_batch(items)         items: list of (key, value) bytes pairs
    peer.produce_one(key, value)      safe to call from `threads` threads
    peer.sync()                       make everything produced so far durable
    peer.consume_prepare()            untimed: open a reader positioned at the start
    peer.consume_all(n) -> (count, crc)
        reads every record in order; crc = zlib.crc32 chained over the values
    peer.bytes_on_disk() -> int       bytes the peer's files occupy now
    peer.close()

Each peer is used the way a competent user of that tool would use it; the
comments in each class say how.  `available()` returns (ok, reason).
"""

import atexit
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib

crc32 = zlib.crc32

CONSUME_BATCH = 10_000   # records per poll / query page, same for every peer


def dir_bytes(path):
    """Bytes occupied by the files under path: per file min(apparent size,
    allocated blocks), so sparse pre-sized files (LMDB map, mmap'd indexes)
    count what they hold and tiny files do not count a whole block."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(root, f))
            except FileNotFoundError:
                continue
            total += min(st.st_size, st.st_blocks * 512)
    return total


def dir_allocated(path):
    """Bytes allocated on disk (st_blocks) under path, preallocation included."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def pylog_topic_bytes(log, topic, logpath):
    """Bytes a pylog topic holds: the valid segment bytes that describe_topic
    reports (a segment file is preallocated ahead of its data) plus the other
    files of its partition directories (indexes, state).  Falls back to the
    partition directories' dir_bytes when describe_topic has no byte count."""
    seg = None
    try:
        info = log.describe_topic(topic)
        seg = sum(pi.bytes for pi in info.partition_info)
    except Exception:
        seg = None
    total = 0
    for root, dirs, _files in os.walk(logpath):
        for d in dirs:
            head, _, num = d.rpartition("-")
            if head != topic or not num.isdigit():
                continue
            pdir = os.path.join(root, d)
            if seg is None:
                total += dir_bytes(pdir)
                continue
            for f in os.listdir(pdir):
                if f.endswith(".log"):
                    continue
                st = os.stat(os.path.join(pdir, f))
                total += min(st.st_size, st.st_blocks * 512)
    return total + (seg or 0)


def make_items(n, size, key_size=16, seed=42):
    """n (key, value) pairs of random bytes, identical for every peer."""
    import random
    rng = random.Random(seed)
    rb = rng.randbytes
    return [(rb(key_size), rb(size)) for _ in range(n)]


def checksum(values):
    crc = 0
    for v in values:
        crc = crc32(v, crc)
    return crc


class Peer:
    name = "?"
    label = "?"
    threads_ok = True       # may produce_one be called from several threads
    scale = 1.0             # fraction of N used for this peer (slow peers)
    version = ""

    @classmethod
    def available(cls):
        return True, ""

    def setup(self, dirpath, durable, threads=1):
        raise NotImplementedError

    def produce_batch(self, items):
        raise NotImplementedError

    def produce_one(self, key, value):
        raise NotImplementedError

    def sync(self):
        pass

    def consume_prepare(self):
        pass

    def consume_all(self, n):
        raise NotImplementedError

    def bytes_on_disk(self):
        return dir_bytes(self.dir)

    def bytes_allocated(self):
        return dir_allocated(self.dir)

    def close(self):
        pass


# --------------------------------------------------------------------------
# raw file: length-prefixed records appended with os.write
# --------------------------------------------------------------------------

_HDR = struct.Struct(">II")   # key length, value length


class RawPeer(Peer):
    """One file, records framed as [u32 klen][u32 vlen][key][value].
    produce_batch: one os.write per batch; produce_one: one os.write per
    record; durability with os.fdatasync.  The physical limit for Python."""
    name = "raw"
    label = "raw os.write"

    @classmethod
    def available(cls):
        cls.version = "os.write (Python %s)" % sys.version.split()[0]
        return True, ""

    def setup(self, dirpath, durable, threads=1):
        self.dir = dirpath
        self.path = os.path.join(dirpath, "data.log")
        self.durable = durable
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def produce_batch(self, items):
        pack = _HDR.pack
        parts = []
        ap = parts.append
        for k, v in items:
            ap(pack(len(k), len(v)))
            ap(k)
            ap(v)
        os.write(self.fd, b"".join(parts))

    def produce_one(self, key, value):
        # O_APPEND: one write per record is atomic with respect to other threads
        os.write(self.fd, _HDR.pack(len(key), len(value)) + key + value)
        if self.durable == "record":
            os.fdatasync(self.fd)

    def sync(self):
        os.fdatasync(self.fd)

    def consume_all(self, n):
        unpack = _HDR.unpack_from
        cnt = crc = 0
        with open(self.path, "rb", buffering=0) as f:
            buf = b""
            while True:
                chunk = f.read(4 << 20)
                if not chunk:
                    break
                buf = buf + chunk if buf else chunk
                pos = 0
                end = len(buf)
                while pos + 8 <= end:
                    kl, vl = unpack(buf, pos)
                    rec_end = pos + 8 + kl + vl
                    if rec_end > end:
                        break
                    crc = crc32(buf[pos + 8 + kl:rec_end], crc)
                    cnt += 1
                    pos = rec_end
                buf = buf[pos:]
        return cnt, crc

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --------------------------------------------------------------------------
# sqlite3 queue table, WAL mode
# --------------------------------------------------------------------------

class SqlitePeer(Peer):
    """Table q(id INTEGER PRIMARY KEY, k BLOB, v BLOB) in WAL mode.
    synchronous=OFF without fsync, FULL for durable modes.  produce_batch:
    executemany in one transaction; produce_one: one autocommit INSERT.
    Consumer: keyset pagination (id > last ORDER BY id LIMIT 10000)."""
    name = "sqlite"
    label = "sqlite3 WAL"

    @classmethod
    def available(cls):
        import sqlite3
        cls.version = "sqlite %s" % sqlite3.sqlite_version
        return True, ""

    def _connect(self):
        import sqlite3
        conn = sqlite3.connect(self.path, isolation_level=None,
                               check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=%s"
                     % ("OFF" if self.durable == "none" else "FULL"))
        return conn

    def setup(self, dirpath, durable, threads=1):
        self.dir = dirpath
        self.path = os.path.join(dirpath, "q.db")
        self.durable = durable
        self.local = threading.local()
        self.conns = []
        self.lock = threading.Lock()
        conn = self._conn()
        conn.execute("CREATE TABLE IF NOT EXISTS q "
                     "(id INTEGER PRIMARY KEY, k BLOB, v BLOB)")

    def _conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = self.local.conn = self._connect()
            with self.lock:
                self.conns.append(c)
        return c

    def produce_batch(self, items):
        c = self._conn()
        c.execute("BEGIN")
        c.executemany("INSERT INTO q (k, v) VALUES (?, ?)", items)
        c.execute("COMMIT")

    def produce_one(self, key, value):
        self._conn().execute("INSERT INTO q (k, v) VALUES (?, ?)", (key, value))

    def consume_all(self, n):
        c = self._conn()
        cnt = crc = 0
        last = 0
        q = "SELECT id, v FROM q WHERE id > ? ORDER BY id LIMIT %d" % CONSUME_BATCH
        while True:
            rows = c.execute(q, (last,)).fetchall()
            if not rows:
                break
            for _id, v in rows:
                crc = crc32(v, crc)
            cnt += len(rows)
            last = rows[-1][0]
        return cnt, crc

    def close(self):
        for c in self.conns:
            c.close()
        self.conns = []


# --------------------------------------------------------------------------
# LMDB appends
# --------------------------------------------------------------------------

class LmdbPeer(Peer):
    """Keys are 8-byte big-endian sequence numbers written with append=True
    (putmulti for a batch, one write txn per batch / per record); values are
    [u8 klen][key][value].  sync=False/metasync=False without fsync,
    sync=True for durable modes.  Consumer: one read txn, cursor scan."""
    name = "lmdb"
    label = "lmdb append"

    @classmethod
    def available(cls):
        try:
            import lmdb
        except ImportError as e:
            return False, "python package lmdb not installed (%s)" % e
        cls.version = "py-lmdb %s, LMDB %s" % (
            lmdb.__version__, ".".join(map(str, lmdb.version())))
        return True, ""

    def setup(self, dirpath, durable, threads=1):
        import lmdb
        self.dir = dirpath
        dur = durable != "none"
        self.env = lmdb.open(dirpath, map_size=1 << 36, sync=dur, metasync=dur,
                             max_dbs=0, lock=True)
        self.seq = 0
        self.lock = threading.Lock()
        self.kpack = struct.Struct(">Q").pack

    def produce_batch(self, items):
        kp = self.kpack
        s = self.seq
        recs = [(kp(s + i), bytes((len(k),)) + k + v) for i, (k, v) in enumerate(items)]
        self.seq = s + len(items)
        with self.env.begin(write=True) as txn:
            txn.cursor().putmulti(recs, append=True)

    def produce_one(self, key, value):
        rec = bytes((len(key),)) + key + value
        with self.lock:            # LMDB serializes writers anyway
            s = self.seq
            self.seq = s + 1
            with self.env.begin(write=True) as txn:
                txn.put(self.kpack(s), rec, append=True)

    def sync(self):
        # durable modes open the env with sync=True: every commit is fsync'd
        if self.env is not None and not self.env.flags().get("sync", True):
            self.env.sync(True)

    def consume_all(self, n):
        cnt = crc = 0
        with self.env.begin(buffers=False) as txn:
            for _k, v in txn.cursor():
                crc = crc32(v[1 + v[0]:], crc)
                cnt += 1
        return cnt, crc

    def close(self):
        if self.env is not None:
            self.env.close()
            self.env = None


# --------------------------------------------------------------------------
# persist-queue (file-based persistqueue.Queue)
# --------------------------------------------------------------------------

class PersistQueuePeer(Peer):
    """persistqueue.Queue (its file-based queue) with default chunk size.
    It has no batch API, so produce_batch is a loop of put(); it has no fsync
    option, so the durable modes os.fsync its head chunk file.  Consumer:
    get() + task_done() per record.  Consuming removes the records."""
    name = "persistqueue"
    label = "persist-queue"
    threads_ok = False
    scale = 0.05     # ~4k records/s: a smaller N keeps the run short

    @classmethod
    def available(cls):
        try:
            import persistqueue
        except ImportError as e:
            return False, ("python package persist-queue not installed (%s); "
                           "pip install -e '.[bench]'" % e)
        cls.version = "persist-queue %s" % getattr(persistqueue, "__version__", "?")
        return True, ""

    def setup(self, dirpath, durable, threads=1):
        import persistqueue
        self.dir = dirpath
        self.durable = durable
        qdir = os.path.join(dirpath, "q")
        os.makedirs(qdir, exist_ok=True)
        self.q = persistqueue.Queue(qdir, tempdir=qdir)

    def produce_batch(self, items):
        put = self.q.put
        for item in items:
            put(item)

    def produce_one(self, key, value):
        self.q.put((key, value))
        if self.durable == "record":
            self.sync()

    def sync(self):
        with self.q.mutex:
            os.fsync(self.q.headf.fileno())

    def consume_all(self, n):
        import persistqueue
        q = self.q
        cnt = crc = 0
        while True:
            try:
                item = q.get(block=False)
            except persistqueue.Empty:
                break
            if item is None:
                break
            crc = crc32(item[1], crc)
            q.task_done()
            cnt += 1
        return cnt, crc

    def close(self):
        self.q = None


# --------------------------------------------------------------------------
# Redis Streams via redis-py on a private local redis-server
# --------------------------------------------------------------------------

_REDIS_PROCS = []


def _kill_redis_procs():
    for p in _REDIS_PROCS:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    _REDIS_PROCS.clear()


atexit.register(_kill_redis_procs)


def _err(msg):
    print(msg, file=sys.stderr, flush=True)


def ensure_redis_server(log=_err, install=False):
    """Path of redis-server; when it is missing, installed with apt-get only
    if ``install`` (compare.py --install-peers). Returns (path or None,
    reason)."""
    path = shutil.which("redis-server")
    if path:
        return path, ""
    if not install:
        return None, ("redis-server not installed (install it, or pass "
                      "--install-peers to apt-get install it)")
    if not shutil.which("apt-get"):
        return None, "redis-server not installed and apt-get is not available"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"]
    log("# redis-server missing: running %s" % " ".join(cmd))
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        log("# install failed; running apt-get update and retrying")
        subprocess.run(["apt-get", "update", "-q"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if not path:
        tail = r.stdout.decode(errors="replace").strip().splitlines()[-3:]
        return None, "could not install redis-server: %s" % " | ".join(tail)
    return path, ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisPeer(Peer):
    """A fresh redis-server per run on 127.0.0.1, private data dir,
    appendonly yes, appendfsync always (durable modes) or everysec,
    no RDB snapshots.  Stream 's', XADD with fields k and v; produce_batch:
    a non-transactional pipeline of XADDs; consumer: XRANGE pages."""
    name = "redis"
    label = "Redis Streams"
    scale = 0.1      # per-record round trips are slow; rates stay comparable
    server = None
    install = False      # compare.py --install-peers

    @classmethod
    def available(cls):
        try:
            import redis
        except ImportError as e:
            return False, ("python package redis not installed (%s); "
                           "pip install -e '.[bench]'" % e)
        path, reason = ensure_redis_server(install=cls.install)
        if not path:
            return False, reason
        cls.server = path
        out = subprocess.run([path, "--version"], stdout=subprocess.PIPE,
                             text=True).stdout.strip()
        ver = out.split("v=")[1].split()[0] if "v=" in out else out
        cls.version = "redis-server %s, redis-py %s" % (ver, redis.__version__)
        return True, ""

    def setup(self, dirpath, durable, threads=1):
        import redis
        self.dir = dirpath
        self.port = free_port()
        fsync = "everysec" if durable == "none" else "always"
        self.proc = subprocess.Popen(
            [self.server, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", dirpath, "--save", "", "--appendonly", "yes",
             "--appendfsync", fsync, "--daemonize", "no",
             "--protected-mode", "yes", "--logfile", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _REDIS_PROCS.append(self.proc)
        self.r = redis.Redis(host="127.0.0.1", port=self.port,
                             max_connections=max(8, threads + 2))
        deadline = time.monotonic() + 10
        while True:
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)

    def produce_batch(self, items):
        pipe = self.r.pipeline(transaction=False)
        for k, v in items:
            pipe.xadd("s", {"k": k, "v": v})
        pipe.execute()

    def produce_one(self, key, value):
        self.r.xadd("s", {"k": key, "v": value})

    def consume_all(self, n):
        r = self.r
        cnt = crc = 0
        start = "-"
        while True:
            rows = r.xrange("s", min=start, max="+", count=CONSUME_BATCH)
            if not rows:
                break
            for _id, fields in rows:
                crc = crc32(fields[b"v"], crc)
            cnt += len(rows)
            start = b"(" + rows[-1][0]
        return cnt, crc

    def close(self):
        if getattr(self, "proc", None) is not None:
            self.r.close()
            self.proc.terminate()       # SIGTERM: redis shuts down cleanly
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc in _REDIS_PROCS:
                _REDIS_PROCS.remove(self.proc)
            self.proc = None


# --------------------------------------------------------------------------
# pylog
# --------------------------------------------------------------------------

def _flatten(polled):
    if isinstance(polled, dict):        # kafka-python style {tp: [records]}
        out = []
        for recs in polled.values():
            out.extend(recs)
        return out
    return polled


class PylogPeer(Peer):
    """pylog.open(sync="never") without fsync and for "fsync per batch"
    (producer.flush() is the fsync), sync="always" for per-record
    durability (group commit across threads).  Topic 't', 1 partition.
    Consumer: a fresh group, earliest, no auto-commit, poll(max_records=10000);
    consume_values uses poll_values (falls back to poll)."""
    name = "pylog"
    label = "pylog"

    @classmethod
    def available(cls):
        try:
            import pylog
        except Exception as e:
            return False, "pylog not importable: %s: %s" % (type(e).__name__, e)
        if not hasattr(pylog, "open"):
            return False, "pylog has no open() yet"
        cls.version = "pylog %s" % getattr(pylog, "__version__", "(dev)")
        return True, ""

    def setup(self, dirpath, durable, threads=1):
        import pylog
        self.dir = dirpath
        self.path = os.path.join(dirpath, "log")
        self.log = pylog.open(self.path,
                              sync="always" if durable == "record" else "never")
        self.log.create_topic("t", partitions=1, exist_ok=True)
        self.p = self.log.producer()
        self.consumer = None

    def produce_batch(self, items):
        self.p.send_batch("t", items, partition=0)

    def produce_one(self, key, value):
        self.p.send("t", value, key=key)

    def sync(self):
        self.p.flush()

    def consume_prepare(self):
        if self.consumer is not None:
            self.consumer.close()
        self.consumer = self.log.consumer(
            "t", group_id="bench-" + uuid.uuid4().hex[:12],
            auto_offset_reset="earliest", enable_auto_commit=False)

    def consume_all(self, n):
        c = self.consumer
        cnt = crc = 0
        empty = 0
        while cnt < n:
            recs = c.poll(timeout=0.5, max_records=CONSUME_BATCH)
            if not recs:
                empty += 1
                if empty >= 3:
                    break
                continue
            if isinstance(recs, dict):
                recs = _flatten(recs)
            for r in recs:
                crc = crc32(r.value, crc)
            cnt += len(recs)
        return cnt, crc

    def consume_values(self, n):
        c = self.consumer
        try:
            pv = c.poll_values
        except AttributeError:
            return None
        cnt = crc = 0
        empty = 0
        while cnt < n:
            vals = pv(timeout=0.5, max_records=CONSUME_BATCH)
            if not vals:
                empty += 1
                if empty >= 3:
                    break
                continue
            for v in vals:
                crc = crc32(v, crc)
            cnt += len(vals)
        return cnt, crc

    def bytes_on_disk(self):
        # the topic's partition directories: valid segment bytes + indexes;
        # not the LMDB metadata, which does not grow with the records, nor
        # the segment preallocation (reported by bytes_allocated)
        return pylog_topic_bytes(self.log, "t", self.path)

    def close(self):
        try:
            if self.consumer is not None:
                self.consumer.close()
                self.consumer = None
            self.p.close()
        finally:
            self.log.close()


ALL_PEERS = [PylogPeer, RawPeer, SqlitePeer, LmdbPeer, PersistQueuePeer, RedisPeer]
PEERS_BY_NAME = {p.name: p for p in ALL_PEERS}
