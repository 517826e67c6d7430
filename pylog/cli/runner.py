"""The one command runner of the ``pylog`` console script.

Every subcommand is a function ``cmd(args) -> exit code``. :func:`run` calls
it and turns what it raises into one line on stderr and an exit code, so no
subcommand repeats the try / except; :func:`open_log` opens ``args.path``
with the checks every subcommand wants; :func:`emit` and :func:`print_list`
print a result as JSON (``--json``) or as text.

Exit codes: 0 ok, 1 problems found (verify, dump, info), 2 usage or expected
errors (missing path, unknown topic, ...). Expected errors are one line on
stderr, ``pylog: error: ...``, never a traceback.

Thread safety: none needed; the console script runs one command on its main
thread. Durability: whatever the opened Log promises; the runner adds none.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator

from ..table import table
from .args import CliError

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 130          # 128 + SIGINT, as a shell reports it


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------

def iso_ms(ms) -> str:
    """Epoch milliseconds as ISO 8601 UTC (``-`` for none)."""
    if ms is None or ms < 0:
        return "-"
    try:
        return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc) \
            .isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def print_json(obj) -> None:
    from ..loginfo import jsonable
    print(json.dumps(jsonable(obj), indent=2, sort_keys=False))


def emit(args, payload, render, code: int = EXIT_OK) -> int:
    """Print ``payload`` as JSON when ``--json`` was given, else call
    ``render()`` to print it as text; return ``code``."""
    if getattr(args, "json", False):
        print_json(payload)
    else:
        render()
    return code


def print_list(args, items: list, empty: str, row, headers: list, right: set) -> int:
    """A ``list`` action's output: JSON, a line when there is nothing, or a
    table of ``row(item)`` for each item."""
    def render():
        if not items:
            print(empty)
        else:
            print(table([row(i) for i in items], headers, right=right))
    return emit(args, items, render)


# ---------------------------------------------------------------------------
# opening logs
# ---------------------------------------------------------------------------

def require_log(path: str) -> str:
    """``path`` if it holds a log; a permission problem raises
    LogPermissionError (never "not a log")."""
    from ..errors import LogNotFound
    from ..store import check_log_dir
    if not path:
        raise CliError("the log PATH is empty")
    try:
        check_log_dir(os.path.abspath(path), f"open {path}")
    except LogNotFound:
        if not os.path.exists(path):
            raise CliError(f"{path}: no such file or directory") from None
        raise CliError(f"{path} is not a pylog log (meta/ is missing)") from None
    return path


def open_log(path: str, readonly: bool = True, **kw):
    """The log at ``path`` (read-only unless asked), after
    :func:`require_log`; use it as a context manager."""
    import pylog
    require_log(path)
    return pylog.open(path, readonly=readonly, **kw)


def forget_replaced_topics(log) -> None:
    """For a command that only watches its own Log (``pylog top``, ``pylog
    metrics --serve``): drop the Log's open partitions of the topics
    another process deleted, or deleted and made again, since they were
    opened, so that the next look shows the new topic and no deleted file
    stays held. Not for a Log that consumers use: a consumer learns of a
    delete from the old partition (it would carry its position onto the
    new topic). Thread-safe (forget_topic takes the Log's lock)."""
    ids = {name: doc["id"] for name, doc in log.meta.topics().items()}
    stale = {topic for (topic, _), part in list(log.open_partitions().items())
             if ids.get(topic) != part.topic_id}
    for topic in stale:
        log.forget_topic(topic)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event,
                    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
                    ) -> Iterator[threading.Event]:
    """Set ``stop`` when one of ``signals`` comes, while the block runs
    (the old handlers are back after it).

    The handler does not call ``stop.set()``: a Python signal handler runs
    in the main thread between two bytecodes, perhaps while that thread is
    inside ``stop.wait()`` holding the Event's lock (not reentrant), and
    ``set()`` would wait for that lock forever. It writes a byte to a pipe
    instead, and a thread of its own reads it and sets ``stop``."""
    r, w = os.pipe()
    os.set_blocking(w, False)

    def on_signal(signum, frame) -> None:
        try:
            os.write(w, b"\0")
        except OSError:             # full: a byte is there already
            pass

    def setter() -> None:
        if os.read(r, 1):           # b"": the block ended, no signal came
            stop.set()

    t = threading.Thread(target=setter, name="pylog-signal-stop", daemon=True)
    t.start()
    old = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        os.close(w)
        t.join()
        os.close(r)


# ---------------------------------------------------------------------------
# running a command
# ---------------------------------------------------------------------------

def _error(message: str) -> int:
    print(f"pylog: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def run(func, args) -> int:
    """``func(args)``, with every expected failure mapped to one line on
    stderr and its exit code (anything else is a bug: its traceback shows)."""
    from ..errors import PylogError
    try:
        return func(args)
    except CliError as exc:
        return _error(str(exc))
    except PylogError as exc:
        return _error(str(exc).replace("\n", " "))
    except BrokenPipeError:
        # the reader of stdout went away (``| head``): not an error; later
        # writes (the interpreter's flush at exit) go nowhere
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print("pylog: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
