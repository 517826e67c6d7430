"""bench/compare.py's measuring kit: the machine, the Bench that keeps every
figure and error of a run, and the checks that every read-back matched;
and the idle-CPU measurement of pylog.aio waiters (bench/aio.py,
bench/queues.py).

Single-threaded: the harness runs one measurement at a time.
"""

import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback


class Mismatch(Exception):
    """A read-back's count or checksum differs from what was written."""


def say(*a):
    """Progress on stderr (stdout carries the report)."""
    print(*a, file=sys.stderr, flush=True)


def machine_info(peer_classes, tmpdir):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "?"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    fs = "?"
    try:
        best = ""
        real = os.path.realpath(tmpdir)
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1]
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, fs = mnt, "%s (%s on %s)" % (parts[2], parts[0], mnt)
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1048576)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": "%s (usable %s)" % (os.cpu_count(), usable),
        "memory": mem,
        "kernel": "%s %s" % (platform.system(), platform.release()),
        "python": "%s %s" % (platform.python_implementation(), sys.version.split()[0]),
        "filesystem": fs,
    }
    for cls in peer_classes:
        info[cls.name] = cls.version or "?"
    return info


class Bench:
    def __init__(self, args, base):
        self.args = args
        self.base = base
        self.results = {}        # peer -> metric -> value
        self.errors = []         # (peer, scenario, message)
        self.mismatch = False

    def put(self, peer, metric, value):
        self.results.setdefault(peer, {})[metric] = value

    def best(self, peer, metric, value):
        """Keep the best (highest) of the repetitions of a rate."""
        old = self.get(peer, metric)
        if old is None or value > old:
            self.put(peer, metric, value)

    def get(self, peer, metric):
        return self.results.get(peer, {}).get(metric)

    def fresh(self, cls, durable, threads=1):
        d = tempfile.mkdtemp(prefix=cls.name + "-", dir=self.base)
        p = cls()
        try:
            p.setup(d, durable, threads)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        return p, d

    @staticmethod
    def done(p, d):
        try:
            p.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def check(self, peer, what, got, n, crc):
        cnt, gcrc = got
        if cnt != n or (crc is not None and gcrc != crc):
            self.mismatch = True
            raise Mismatch("%s %s: read back %d records crc %08x, expected %d crc %s"
                           % (peer, what, cnt, gcrc, n,
                              "%08x" % crc if crc is not None else "-"))

    def guarded(self, peer, scenario, fn):
        try:
            fn()
        except Mismatch as e:
            say("!! MISMATCH", e)
            self.errors.append((peer, scenario, str(e)))
        except Exception as e:
            say("!! %s / %s failed: %s: %s" % (peer, scenario, type(e).__name__, e))
            if self.args.verbose:
                traceback.print_exc()
            self.errors.append((peer, scenario, "%s: %s" % (type(e).__name__, e)))


def peer_n(cls, n, floor=1000):
    return max(min(n, floor), int(n * cls.scale))


async def idle_cpu_share(consumers, settle_s, seconds):
    """Share of a CPU this process uses while ``consumers`` (pylog.aio
    consumers or share consumers of one running event loop) each wait in
    a getmany of an empty topic: CPU time over wall time across
    ``seconds``, after ``settle_s`` for them to start waiting. The waits
    are cancelled before it returns (closing the consumers is the
    caller's)."""
    tasks = [asyncio.create_task(c.getmany(timeout_ms=600_000)) for c in consumers]
    try:
        await asyncio.sleep(settle_s)
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        return (time.process_time() - cpu0) / (time.monotonic() - t0)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
