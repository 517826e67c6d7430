"""Log.close() racing other threads' metadata calls (pylog.metacalls)."""

import threading

from topicchurn import CHURN_THREADS, close_under_topic_churn

import pylog


def test_close_never_waits_for_good_on_a_racing_write(tmp_path):
    """Threads create and delete topics while another closes the Log. A
    write transaction begun while py-lmdb closed the environment left its
    record of an open write behind with no transaction, and the close
    waited for it for good (1 run in 2 of 10 rounds, 2 in 3 of 30). Now
    the close refuses new calls (LogClosed) and waits for those in flight
    before closing the environment."""
    errors: list[BaseException] = []
    for rnd in range(60):
        def close(lg, rnd=rnd):
            closer = threading.Thread(target=lg.close, daemon=True)
            closer.start()
            closer.join(20)
            assert not closer.is_alive(), f"Log.close() hung (round {rnd})"
        errors += close_under_topic_churn(tmp_path / str(rnd), 0.02 + rnd % 3 * 0.02, close)
    assert len(errors) == 60 * CHURN_THREADS
    assert {type(e) for e in errors} == {pylog.LogClosed}, errors
