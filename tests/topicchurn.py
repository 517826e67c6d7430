"""A Log closed while threads create and delete topics on it, for the
close-race tests (a plain module: ``from conftest import`` would find
tests/promises/conftest.py when the whole suite runs)."""

import threading

import pylog

CHURN_THREADS = 4


def close_under_topic_churn(path, delay_s, close):
    """Open the log at ``path``; start :data:`CHURN_THREADS` threads that
    create and delete topics until a call raises; after ``delay_s`` call
    ``close(log)``; join them and reopen the log. Returns the exception
    each thread ended with (one a thread; a thread still running after
    30 s has none)."""
    lg = pylog.open(path)
    errors: list[BaseException] = []

    def churn(i):
        for n in range(100_000):
            try:
                lg.create_topic(f"x{i}-{n}", partitions=2)
                lg.delete_topic(f"x{i}-{n}")
            except Exception as exc:             # the caller checks them
                errors.append(exc)
                return
    ts = [threading.Thread(target=churn, args=(i,), daemon=True)
          for i in range(CHURN_THREADS)]
    for t in ts:
        t.start()
    threading.Event().wait(delay_s)
    close(lg)
    for t in ts:
        t.join(30)
    pylog.open(path).close()
    return errors
