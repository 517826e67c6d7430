"""acknowledge() after the share consumer or its Log was closed: the
acknowledgement can never be applied, so it raises LogClosed. It used to
say the record was "not held by this consumer (not acquired by it, or
already acknowledged)" after close(), and to accept it silently after
the Log's close()."""

import pytest
from sharejobs import jobs_log, jobs_share

import pylog


def test_acknowledge_after_close_raises_log_closed(logdir):
    with jobs_log(logdir, n=2) as log:
        c = jobs_share(log)
        recs = c.poll(timeout_ms=500)
        assert recs
        c.close()
        with pytest.raises(pylog.LogClosed, match="share consumer is closed"):
            c.acknowledge(recs[0])


def test_acknowledge_after_the_logs_close_raises_log_closed(logdir):
    log = jobs_log(logdir, n=2)
    c = jobs_share(log)
    recs = c.poll(timeout_ms=500)
    assert recs
    log.close()
    with pytest.raises(pylog.LogClosed):
        c.acknowledge(recs[0])
