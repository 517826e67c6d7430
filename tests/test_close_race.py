"""Log.close() racing other threads' metadata calls (pylog.metacalls)."""

import threading
import time

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
        path = tmp_path / str(rnd)
        lg = pylog.open(path)

        def admin(i, lg=lg):
            for n in range(100_000):
                try:
                    lg.create_topic(f"x{i}-{n}", partitions=2)
                    lg.delete_topic(f"x{i}-{n}")
                except Exception as exc:             # checked below
                    errors.append(exc)
                    return
        ts = [threading.Thread(target=admin, args=(i,), daemon=True) for i in range(4)]
        for t in ts:
            t.start()
        time.sleep(0.02 + rnd % 3 * 0.02)
        closer = threading.Thread(target=lg.close, daemon=True)
        closer.start()
        closer.join(20)
        assert not closer.is_alive(), f"Log.close() hung (round {rnd})"
        for t in ts:
            t.join(30)
        pylog.open(path).close()
    assert len(errors) == 240
    assert {type(e) for e in errors} == {pylog.LogClosed}, errors
