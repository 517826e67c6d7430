"""pylog.aio against the threaded API, in one run (issue 18's bars).

- latency: a record stamped with time.perf_counter_ns(), sent every ~1 ms,
  to a consumer waiting for it: threaded (a thread blocked in poll) vs
  asyncio (producer task -> consumer task awaiting getmany, one loop),
  in alternating rounds pooled (each round's ratio printed too);
  bar: asyncio p50 <= 1.5x threaded. Beside them, the same hop on one
  loop with no pylog.aio code in it (lat_floor).
- consumption: records already on disk read with poll vs getmany, and
  ``for record in consumer`` vs ``async for`` (per record, the same loop
  body), best of 3 each; bar: async >= 0.8x poll. Next to them, what
  CPython itself charges a step of an async generator against a plain
  generator's (``async for`` cannot cost less than that per record).
- loop stalls: while a producer, a committing group consumer and
  sync="always" sends run flat out, the callbacks of the loop that kept
  it over 1 ms of their own time (tests/loopwatch.py: wall time minus the
  kernel's run-queue wait, so other processes of a shared machine do not
  count), and the lateness of a 1 ms heartbeat (which they do); bar:
  none over 1 ms.
- idle CPU: 1,000 consumers awaiting getmany on one loop; bar: < 1%.

Run: ``python bench/aio.py [--loop uvloop] [--records N]``. Prints one
line per figure; figures are of this machine, in this run.

Single-threaded harness; durability as each log's sync mode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

from loopwatch import LoopWatch  # noqa: E402
from measure import idle_cpu_share  # noqa: E402

import pylog  # noqa: E402
import pylog.aio  # noqa: E402

TS = struct.Struct("<Q")
PAD = b"x" * 92
#: consumption figures are the best of this many interleaved runs each
READ_REPS = 3
#: the latency figures pool this many alternating threaded/asyncio rounds
LAT_ROUNDS = 5


def pct(vals: list[float], q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]


def lat_threaded(path: str, n: int) -> list[float]:
    with pylog.open(path, sync="never") as log:
        log.create_topic("t")
        p = log.producer()
        c = log.consumer("t")
        c.poll()        # positioned at the end before the first send
        lats: list[float] = []

        def consume() -> None:
            while len(lats) < n:
                for r in c.poll(timeout=1.0):
                    lats.append((time.perf_counter_ns() - TS.unpack_from(r.value)[0]) / 1e3)

        t = threading.Thread(target=consume)
        t.start()
        for _ in range(n):
            time.sleep(0.001)
            p.send("t", TS.pack(time.perf_counter_ns()) + PAD)
        t.join()
        c.close()
    return lats


async def lat_async(path: str, n: int) -> list[float]:
    async with pylog.aio.open(path, sync="never") as log:
        await log.create_topic("t")
        p = log.producer()
        c = log.consumer("t")
        await c.getmany()
        lats: list[float] = []

        async def consume() -> None:
            while len(lats) < n:
                for recs in (await c.getmany(timeout_ms=1000)).values():
                    now = time.perf_counter_ns()
                    lats.extend((now - TS.unpack_from(r.value)[0]) / 1e3 for r in recs)

        task = asyncio.create_task(consume())
        for _ in range(n):
            await asyncio.sleep(0.001)
            await p.send("t", TS.pack(time.perf_counter_ns()) + PAD)
        await task
        await c.close()
    return lats


async def lat_floor(path: str, n: int) -> list[float]:
    """The latency of the same hop with no pylog.aio code in it: on one
    loop, a plain Producer.send then a future set by hand; the consumer
    task awaits the future, then ``poll(0)``. What one loop charges for
    the hop that the threaded path spreads over two cores."""
    with pylog.open(path, sync="never") as log:
        log.create_topic("t")
        p = log.producer()
        c = log.consumer("t")
        c.poll()
        loop = asyncio.get_running_loop()
        ready = [loop.create_future()]
        lats: list[float] = []

        async def consume() -> None:
            while len(lats) < n:
                await ready[0]
                ready[0] = loop.create_future()
                for r in c.poll(0):
                    lats.append((time.perf_counter_ns() - TS.unpack_from(r.value)[0]) / 1e3)

        task = asyncio.create_task(consume())
        for _ in range(n):
            await asyncio.sleep(0.001)
            p.send("t", TS.pack(time.perf_counter_ns()) + PAD)
            ready[0].set_result(None)
        await task
        c.close()
    return lats


def fill(path: str, n: int) -> None:
    with pylog.open(path, sync="never") as log:
        log.create_topic("t")
        p = log.producer()
        for i in range(0, n, 1000):
            p.send_batch("t", [PAD] * min(1000, n - i))


def read_poll(path: str, n: int, by_one: bool = False) -> float:
    """Records/s read with poll (``by_one``: ``for record in consumer``,
    the threaded counterpart of ``async for``, with the same loop body)."""
    with pylog.open(path, sync="never") as log:
        c = log.consumer("t", auto_offset_reset="earliest")
        t0 = time.perf_counter()
        got = 0
        if by_one:
            for _ in c:
                got += 1
                if got == n:
                    break
        else:
            while got < n:
                got += len(c.poll(max_records=500))
        dt = time.perf_counter() - t0
        c.close()
    return n / dt


async def read_getmany(path: str, n: int, by_one: bool) -> float:
    async with pylog.aio.open(path, sync="never") as log:
        c = log.consumer("t", auto_offset_reset="earliest")
        t0 = time.perf_counter()
        got = 0
        if by_one:
            async for _ in c:
                got += 1
                if got == n:
                    break
        else:
            while got < n:
                got += sum(map(len, (await c.getmany(max_records=500)).values()))
        dt = time.perf_counter() - t0
        await c.close()
    return n / dt


def step_costs(run: Any, n: int = 500_000) -> tuple[float, float]:
    """ns per item of ``for`` over a plain generator and of ``async for``
    over an async generator, both yielding the items of a list with the
    same body: what CPython charges ``async for`` itself, whatever the
    iterator does (best of READ_REPS)."""
    items = list(range(n))

    def gen() -> Any:
        for x in items:
            yield x

    async def agen() -> Any:
        for x in items:
            yield x

    async def drain() -> None:
        async for _ in agen():
            pass
    plain = stepped = float("inf")
    for _ in range(READ_REPS):
        t0 = time.perf_counter_ns()
        for _ in gen():
            pass
        t1 = time.perf_counter_ns()
        run(drain())
        t2 = time.perf_counter_ns()
        plain, stepped = min(plain, (t1 - t0) / n), min(stepped, (t2 - t1) / n)
    return plain, stepped


async def idle_gaps(turns: int) -> list[float]:
    """The heartbeat's lateness with nothing else running: the machine's
    own noise floor, printed next to the figure under load."""
    gaps: list[float] = []
    last = time.perf_counter()
    for _ in range(turns):
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last - 0.001)
        last = now
    return gaps


async def stalls(base: str, n: int, watch: LoopWatch) -> tuple[list[float], float]:
    """The heartbeat's lateness under load, and records/s of the
    sync="never" phase (each produced and consumed, on the one loop)."""
    gaps: list[float] = []
    rate = 0.0
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last - 0.001)
            last = now

    beat = asyncio.create_task(heartbeat())
    for sync, count in (("never", n), ("always", 500)):
        async with pylog.aio.open(os.path.join(base, sync), sync=sync) as log:
            await log.create_topic("t", 2)
            p = log.producer()
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             auto_commit_interval_ms=50)

            async def produce(p: Any = p, count: int = count) -> None:
                for _ in range(count):
                    await p.send("t", PAD)

            async def consume(c: Any = c, count: int = count) -> None:
                seen = 0
                while seen < count:
                    seen += sum(map(len, (await c.getmany(timeout_ms=1000)).values()))
                    await c.commit()

            with watch if LoopWatch.available else contextlib.nullcontext():
                t0 = time.perf_counter()
                await asyncio.gather(produce(), consume())
                if sync == "never":
                    rate = count / (time.perf_counter() - t0)
            await c.close()
            await p.close()
    stop.set()
    await beat
    return gaps, rate


async def idle_cpu(path: str, n: int, seconds: float) -> float:
    async with pylog.aio.open(path, sync="never") as log:
        await log.create_topic("t")
        consumers = [log.consumer("t") for _ in range(n)]
        share = await idle_cpu_share(consumers, 1.5, seconds)
        for c in consumers:
            await c.close()
    return share


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--latency-records", type=int, default=3000)
    ap.add_argument("--fair-slice-us", type=int, default=None,
                    help="pylog.aio.FAIR_SLICE_S for this run, in µs (default: as shipped)")
    args = ap.parse_args()
    if args.fair_slice_us is not None:
        pylog.aio.FAIR_SLICE_S = args.fair_slice_us / 1e6
    factory = asyncio.new_event_loop
    if args.loop == "uvloop":
        import uvloop
        factory = uvloop.new_event_loop
    base = tempfile.mkdtemp(prefix="bench-aio-")
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            # LAT_ROUNDS alternating rounds, pooled: a slow spell of the
            # shared machine lands on both sides instead of deciding the ratio
            n = max(1, args.latency_records // LAT_ROUNDS)
            thr: list[float] = []
            asy: list[float] = []
            flo: list[float] = []
            ratios: list[float] = []
            for i in range(LAT_ROUNDS):
                t = lat_threaded(os.path.join(base, f"lt{i}"), n)
                a = runner.run(lat_async(os.path.join(base, f"la{i}"), n))
                flo += runner.run(lat_floor(os.path.join(base, f"lf{i}"), n))
                thr += t
                asy += a
                ratios.append(pct(a, 50) / pct(t, 50))
            t50, a50 = pct(thr, 50), pct(asy, 50)
            print(f"latency p50 threaded {t50:.1f} us, asyncio {a50:.1f} us: "
                  f"{a50 / t50:.2f}x (bar <= 1.5x); p99 {pct(thr, 99):.1f} / "
                  f"{pct(asy, 99):.1f} us; per round "
                  + ", ".join(f"{r:.2f}x" for r in ratios))
            print(f"latency p50 of the one-loop floor (no pylog.aio code: a plain send, "
                  f"a future set by hand, poll(0) in the consumer task) {pct(flo, 50):.1f} "
                  f"us: {pct(flo, 50) / t50:.2f}x of threaded; pylog.aio "
                  f"{a50 / pct(flo, 50):.2f}x of it")
            path = os.path.join(base, "fill")
            fill(path, args.records)
            # best of READ_REPS each, interleaved: one slow spell of the
            # shared machine does not decide a ratio
            rates: dict[str, float] = {}
            for _ in range(READ_REPS):
                for name, rate in (
                        ("poll", lambda: read_poll(path, args.records)),
                        ("for", lambda: read_poll(path, args.records, True)),
                        ("getmany", lambda: runner.run(
                            read_getmany(path, args.records, False))),
                        ("async for", lambda: runner.run(
                            read_getmany(path, args.records, True)))):
                    rates[name] = max(rates.get(name, 0.0), rate())
            poll_rate, for_rate = rates["poll"], rates["for"]
            many_rate, iter_rate = rates["getmany"], rates["async for"]
            print(f"consumption poll {poll_rate:,.0f}/s, getmany {many_rate:,.0f}/s "
                  f"({many_rate / poll_rate:.2f}x), async for {iter_rate:,.0f}/s "
                  f"({iter_rate / poll_rate:.2f}x of poll; {iter_rate / for_rate:.2f}x "
                  f"of `for record in consumer`, {for_rate:,.0f}/s) (bar >= 0.8x)")
            plain, stepped = step_costs(runner.run)
            print(f"CPython's own step: generator {plain:.0f} ns, async generator "
                  f"{stepped:.0f} ns per item; a record costs {1e9 / poll_rate:.0f} ns "
                  f"by poll, {1e9 / iter_rate:.0f} ns by async for")
            watch = LoopWatch(threshold_ms=1.0)
            gaps, flat_out = runner.run(stalls(os.path.join(base, "stall"), 50_000, watch))
            print(f"flat out on one loop: {flat_out:,.0f} records/s produced and consumed "
                  f"(sync=\"never\", fair slice {pylog.aio.FAIR_SLICE_S * 1e6:.0f} µs)")
            if args.loop == "asyncio" and LoopWatch.available:
                busy = sum(s.cpu_ms >= 0.5 for s in watch.stalls)
                print(f"loop callbacks under load: {watch.summary()}; {busy} of them "
                      "mostly CPU, the rest blocked (bar: none)")
            floor = runner.run(idle_gaps(len(gaps)))
            for name, g in (("under load", gaps), ("idle loop (noise floor)", floor)):
                over = sum(x > 0.001 for x in g)
                print(f"heartbeat lateness {name}: worst {max(g) * 1e3:.2f} ms, p99 "
                      f"{pct(g, 99) * 1e3:.3f} ms, p50 {pct(g, 50) * 1e3:.3f} ms, "
                      f"{over} of {len(g)} turns over 1 ms late (bar: none)")
            share = runner.run(idle_cpu(os.path.join(base, "idle"), 1000, 5.0))
            print(f"1,000 idle consumers: {share * 100:.2f}% of a CPU (bar < 1%)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
