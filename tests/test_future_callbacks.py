"""FutureRecordMetadata as kafka-python's Future: ``add_callback``,
``add_errback`` and ``add_both`` take ``(fn, *args, **kwargs)`` and call
``fn(*args, value, **kwargs)``; once each, on the side that happened;
``get(timeout)``, ``succeeded()``, ``failed()``, ``exception``, ``is_done``."""

import pytest

import pylog

LONG = 60_000


def test_callbacks_take_args_and_kwargs_and_add_both_runs_once(log):
    log.create_topic("t", max_message_bytes=1000)
    p, q = log.producer(linger_ms=LONG), log.producer(linger_ms=LONG)
    ok, bad = p.send("t", b"a"), q.send("t", b"x" * 2000)
    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
    for f, name in ((ok, "ok"), (bad, "bad")):
        assert f.add_callback(record, "cb", name, tag=1) is f
        assert f.add_errback(record, "eb", name, tag=2) is f
        assert f.add_both(record, "both", name, tag=3) is f
    assert not ok.is_done and all(args[2] is bad.exception for args, _ in calls)
    with pytest.raises(pylog.SendTimeoutError):
        ok.get(timeout=0.01)
    p.flush()
    q.flush()
    md, exc = ok.get(timeout=1), bad.exception
    assert isinstance(exc, pylog.RecordTooLarge)
    assert sorted(calls, key=repr) == sorted([
        (("cb", "ok", md), {"tag": 1}), (("both", "ok", md), {"tag": 3}),
        (("eb", "bad", exc), {"tag": 2}), (("both", "bad", exc), {"tag": 3})], key=repr)
    # added once done: called at once, on the side that happened
    calls.clear()
    ok.add_both(record, k="v")
    bad.add_both(record, k="v")
    assert calls == [((md,), {"k": "v"}), ((exc,), {"k": "v"})]
    assert (ok.succeeded(), ok.failed(), ok.exception, ok.value) == (True, False, None, md)
    assert (bad.succeeded(), bad.failed(), bad.is_done, bad.value) == (False, True, True, None)
    with pytest.raises(pylog.RecordTooLarge):
        bad.get(timeout=1)
