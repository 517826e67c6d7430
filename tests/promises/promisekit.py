"""Helpers of the README promise tests (tests/promises/): the README itself,
child processes that print what happened, and reading a log back.

Every test of this directory quotes, as the first paragraph of its
docstring, the README sentence(s) it tries to break;
test_readme_quotes.py checks that each quote is still in README.rst.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import tempfile
import textwrap
import time

import pylog

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
README = os.path.join(REPO_ROOT, "README.rst")


def normalize(text: str) -> str:
    """Whitespace-insensitive form of README text (line breaks, indents)."""
    return re.sub(r"\s+", " ", text).strip()


def readme_text() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def quote_of(func) -> str:
    """The first paragraph of ``func``'s docstring: its README quote."""
    doc = textwrap.dedent(func.__doc__ or "").strip()
    first = re.split(r"\n\s*\n", doc, maxsplit=1)[0]
    return normalize(first)


class Child:
    """A Python child process running ``code`` (argv[1:] = ``args``) with
    stdout read line by line, stderr kept in a file; always ended."""

    def __init__(self, code, *args, env, extra_env=None, **popen):
        e = dict(env)
        e.update(extra_env or {})
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", textwrap.dedent(code), *map(str, args)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err,
            env=e, **popen)
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.partial = ""
        self._buf = b""
        self._scan = 0
        self.eof = False

    def _read(self, timeout: float) -> None:
        if self.eof:
            return
        r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, timeout))
        if not r:
            return
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not chunk:
            self.eof = True
            return
        self._buf += chunk
        *full, self._buf = self._buf.split(b"\n")
        self.lines.extend(x.decode() for x in full)

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        """The next stdout line starting with ``prefix`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            while self._scan < len(self.lines):
                ln = self.lines[self._scan]
                self._scan += 1
                if ln.startswith(prefix):
                    return ln
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                if self.eof:
                    self.proc.wait(timeout=10)
                raise AssertionError(
                    f"child did not print {prefix!r} within {timeout} s "
                    f"(exit {self.proc.poll()}); last stdout {self.lines[-10:]}; "
                    f"stderr:\n{self.stderr()[-3000:]}")
            self._read(min(left, 0.2))

    def send_signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 30.0) -> int:
        """Read stdout to its end, wait for exit; the exit code."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AssertionError(f"child still running after {timeout} s; "
                                     f"stdout {self.lines[-10:]}; stderr:\n"
                                     f"{self.stderr()[-3000:]}")
            self._read(min(left, 0.2))
        # an unterminated last line is not a line: a child killed in the
        # middle of a print (python -u writes each piece of it) left it
        self.partial = self._buf.decode(errors="replace")
        self._buf = b""
        return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))

    def ok(self, timeout: float = 30.0) -> list[str]:
        """finish() that must exit 0; stdout lines."""
        rc = self.finish(timeout)
        assert rc == 0, f"child exited {rc}; stdout {self.lines[-10:]}; " \
                        f"stderr:\n{self.stderr()[-3000:]}"
        return self.lines

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        self.proc.stdout.close()
        self._err.close()


def run_child(code, *args, env, timeout=30.0, extra_env=None, **popen) -> list[str]:
    """Run ``code`` to its end (it must exit 0); its stdout lines."""
    with Child(code, *args, env=env, extra_env=extra_env, **popen) as c:
        return c.ok(timeout)


def read_all(log, topic: str, partition: int | None = None) -> list:
    """Every retained record of ``topic`` (or one partition of it), read by
    a fresh consumer without a group, in (partition, offset) order."""
    n = log.describe_topic(topic).partitions
    tps = [pylog.TopicPartition(topic, p) for p in range(n)
           if partition is None or p == partition]
    c = log.consumer(enable_auto_commit=False)
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out = []
    while True:
        batch = c.poll(timeout=0.05, max_records=100_000)
        if not batch:
            break
        out.extend(batch)
    c.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))


def wait_until(cond, timeout: float, step: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(step)


# -- Kafka RecordBatch v2, read independently of pylog (FORMAT.rst) ----------------

def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli), bit-reflected, as Kafka's Crc32C."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _varint(buf, pos):
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos


def parse_batches(data: bytes):
    """[(position, batch dict)] of the RecordBatch v2 batches at the start of
    segment bytes ``data``, stopping at zeros, a short tail or a bad CRC."""
    import struct
    out, pos = [], 0
    while pos + 61 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        if length <= 0 or pos + 12 + length > len(data):
            break
        epoch, magic, crc = struct.unpack_from(">ibI", data, pos + 12)
        (attrs, last_delta, first_ts, max_ts, pid, pepoch, bseq,
         count) = struct.unpack_from(">hiqqqhii", data, pos + 21)
        end = pos + 12 + length
        b = dict(base_offset=base, length=length, magic=magic, crc=crc,
                 crc_ok=crc32c(data[pos + 21:end]) == crc, attributes=attrs,
                 last_offset_delta=last_delta, first_timestamp=first_ts,
                 max_timestamp=max_ts, count=count, size=12 + length)
        if not b["crc_ok"]:
            break
        if attrs & 0x7 == 0:
            recs, p = [], pos + 61
            for _ in range(count):
                rlen, p = _varint(data, p)
                rend = p + rlen
                p += 1                                  # record attributes
                ts_delta, p = _varint(data, p)
                off_delta, p = _varint(data, p)
                klen, p = _varint(data, p)
                key = None if klen < 0 else bytes(data[p:p + klen])
                p += max(klen, 0)
                vlen, p = _varint(data, p)
                value = None if vlen < 0 else bytes(data[p:p + vlen])
                p += max(vlen, 0)
                nh, p = _varint(data, p)
                headers = []
                for _ in range(nh):
                    hk, p = _varint(data, p)
                    hkey = bytes(data[p:p + hk]).decode()
                    p += hk
                    hv, p = _varint(data, p)
                    headers.append((hkey, None if hv < 0 else bytes(data[p:p + hv])))
                    p += max(hv, 0)
                assert p == rend, "record length does not match its fields"
                recs.append(dict(offset=base + off_delta, timestamp=first_ts + ts_delta,
                                 key=key, value=value, headers=headers))
            b["records"] = recs
        out.append((pos, b))
        pos = end
    return out


def segments(logdir, topic="t", partition=0):
    d = os.path.join(str(logdir), f"{topic}-{partition}")
    return sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".log"))


# -- power loss through the LD_PRELOAD shim of tests/shim (see test_powerloss) -----

def shim_env(env, so, logdir, shadow):
    e = dict(env)
    e.update(LD_PRELOAD=so, PLSHIM_SHADOW_ROOT=os.path.abspath(str(logdir)),
             PLSHIM_SHADOW_DIR=str(shadow))
    return e


def lose_power(logdir, shadow) -> int:
    """Replace every file of the log by its durable image (what the last
    fsync/fdatasync/msync of it stored; empty if never synced): what a
    power loss leaves when no unsynced page reached the disk. Returns the
    number of files that lost something."""
    changed = 0
    for dirpath, _, filenames in os.walk(str(logdir)):
        for name in filenames:
            p = os.path.join(dirpath, name)
            img_path = os.path.join(str(shadow), f"{os.stat(p).st_ino}.img")
            img = b""
            if os.path.exists(img_path):
                with open(img_path, "rb") as f:
                    img = f.read()
            with open(p, "rb") as f:
                cur = f.read()
            if cur != img:
                changed += 1
                with open(p, "wb") as f:
                    f.write(img)
    return changed


def acked_of(lines):
    """{(partition, offset): value} of the lines "A partition offset value"
    a child printed after each acknowledged send."""
    out = {}
    for ln in lines:
        parts = ln.split(" ")
        if parts[0] == "A" and len(parts) == 4:
            out[(int(parts[1]), int(parts[2]))] = parts[3].encode()
    return out
