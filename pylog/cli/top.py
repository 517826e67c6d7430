"""``pylog top``: a live view of a log, refreshed every ``--interval``.

Topics with their produce and consume rates, consumer groups with lag bars,
work queues (share groups) with records in flight, delayed and dead. Drawn
with ``rich`` when it is installed (the ``pylog[top]`` extra) and stdout is
a terminal; plain text otherwise (``--plain`` forces it). When stdout is not
a terminal, or one that cannot move its cursor (TERM=dumb or unset), each
refresh is printed as a block of lines (``-n 1``: one snapshot, for
scripts).

Terminal handling: while the view runs, the terminal is in cbreak mode
without echo (a ``q`` quits at once), the alternate screen is shown and the
cursor hidden; ``q``, Ctrl-C and SIGTERM all restore the saved termios
settings, the cursor and the main screen before the command returns, and
Ctrl-Z restores them while the command is stopped.

Opens the log read-only, once: a read-only view follows writers that
open the log after it (:class:`LogSource`). Thread safety: runs on the console script's main
thread only (it installs a SIGTERM handler while it runs).
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import sys
import termios
import time
from typing import Any

from .args import add_command, int_in
from .runner import EXIT_OK, forget_replaced_topics, open_log
from .topdraw import plain_lines, rich_view
from .topmodel import build_view, take_snapshot

ALT_SCREEN_ON, ALT_SCREEN_OFF = "\x1b[?1049h", "\x1b[?1049l"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
INTERVAL_MIN = 0.1


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= INTERVAL_MIN or value > 3600:
        raise argparse.ArgumentTypeError(
            f"{text} is out of range, expected {INTERVAL_MIN} to 3600 seconds")
    return value


def register(subs) -> None:
    s = add_command(subs, "top", "a live view: topic rates, group lag, work queues",
                    "Topics with produce and consume rates (records/s, from the offset\n"
                    "deltas between refreshes), consumer groups with lag bars, work\n"
                    "queues with records in flight, delayed and dead-lettered. q or\n"
                    "Ctrl-C quits. Uses rich when installed (pip install 'pylog[top]').\n\n"
                    "examples:\n"
                    "  pylog top data/events\n"
                    "  pylog top data/events --interval 0.5 --plain\n"
                    "  pylog top data/events -n 2 > snapshot.txt   (two refreshes, as text)")
    s.add_argument("path", metavar="LOG", help="the log directory")
    s.add_argument("--interval", type=_interval, default=1.0, metavar="SECONDS",
                   help="time between refreshes (1; at least 0.1)")
    s.add_argument("--plain", action="store_true",
                   help="plain text, even when rich is installed")
    s.add_argument("-n", "--iterations", type=int_in(1, None, "refreshes before exiting"),
                   metavar="N", help="exit after N refreshes (default: until q)")
    s.set_defaults(func=cmd_top)


def _rich_available() -> bool:
    try:
        import rich.live  # noqa: F401
    except ImportError:
        return False
    return True


class Keys:
    """Key presses from a terminal on stdin, read without waiting for a
    line and without echo (cbreak); a no-op when stdin is no terminal.
    Restores the saved termios settings on close."""

    def __init__(self, stream: Any) -> None:
        self.fd: int | None = None
        self.saved: list[Any] | None = None
        try:
            fd = stream.fileno()
        except (AttributeError, ValueError, OSError):
            return
        if os.isatty(fd):
            self.fd = fd

    def __enter__(self) -> Keys:
        if self.fd is not None:
            self.saved = termios.tcgetattr(self.fd)
            mode = termios.tcgetattr(self.fd)
            mode[3] &= ~(termios.ECHO | termios.ICANON)     # lflags; ISIG stays: ^C works
            mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
            termios.tcsetattr(self.fd, termios.TCSANOW, mode)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def wait(self, timeout: float) -> str:
        """The keys pressed within ``timeout`` seconds ("" for none)."""
        if self.fd is None:
            time.sleep(max(0.0, timeout))
            return ""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return ""
        data = os.read(self.fd, 64)
        if not data:                # the terminal hung up: nothing more to read
            self.fd = None
        return data.decode("utf-8", "replace")


class PlainScreen:
    """Plain-text frames: redrawn in place on the alternate screen of a
    terminal, or printed one after another to anything else."""

    def __init__(self, out: Any, tty: bool) -> None:
        self.out = out
        self.tty = tty      # a terminal that can move its cursor

    def __enter__(self) -> PlainScreen:
        if self.tty:
            self.out.write(ALT_SCREEN_ON + HIDE_CURSOR)
            self.out.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tty:
            self.out.write(SHOW_CURSOR + ALT_SCREEN_OFF)
            self.out.flush()

    def draw(self, view: Any, now: str, first: bool) -> None:
        if not self.tty:
            if not first:
                self.out.write("\n")
            self.out.write("\n".join(plain_lines(view, now)) + "\n")
        else:
            # (a terminal that reports no size, 0x0: 80x24, not blank lines)
            size = shutil.get_terminal_size()
            lines = plain_lines(view, now, size.columns, size.lines)
            # home, each line then erase its rest, erase below: no flicker
            self.out.write("\x1b[H" + "\x1b[K\r\n".join(lines) + "\x1b[K\x1b[J")
        self.out.flush()


class RichScreen:
    """Frames drawn by rich's Live display on the alternate screen."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live
        self.live = Live(console=Console(), screen=True, auto_refresh=False,
                         redirect_stdout=False, redirect_stderr=False)

    def __enter__(self) -> RichScreen:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()

    def draw(self, view: Any, now: str, first: bool) -> None:
        self.live.update(rich_view(view, now), refresh=True)


class LogSource:
    """The read-only log every refresh reads, opened once: a read-only view
    follows writers that open after it (pylog.partition)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.log: Any = None

    def get(self) -> Any:
        return self.log

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def __enter__(self) -> LogSource:
        self.log = open_log(self.path)   # a bad path fails before the screen changes
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _suspender(keys: Keys, screen: Any) -> Any:
    """A SIGTSTP (Ctrl-Z) handler: the terminal restored while stopped, and
    cbreak mode and the screen taken again on SIGCONT (the next refresh
    redraws)."""
    def suspend(signum: int, frame: Any) -> None:
        screen.__exit__(None, None, None)
        keys.__exit__(None, None, None)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)      # stops here until SIGCONT
        signal.signal(signal.SIGTSTP, suspend)
        keys.__enter__()
        screen.__enter__()
    return suspend


def _can_redraw(out: Any) -> bool:
    """Whether ``out`` is a terminal that can move its cursor: not one
    with TERM=dumb or no TERM (an editor's shell buffer), where rich
    draws nothing and escape codes show as text; those get each refresh
    printed as lines, as a pipe does."""
    return bool(out.isatty()) and os.environ.get("TERM", "dumb") not in ("", "dumb")


def cmd_top(args) -> int:
    redraw = _can_redraw(sys.stdout)
    use_rich = not args.plain and redraw and _rich_available()
    with LogSource(args.path) as source:
        old_term = signal.signal(signal.SIGTERM, _terminate)
        old_tstp = signal.getsignal(signal.SIGTSTP)
        try:
            with Keys(sys.stdin) as keys, \
                    (RichScreen() if use_rich else PlainScreen(sys.stdout, redraw)) as screen:
                signal.signal(signal.SIGTSTP, _suspender(keys, screen))
                try:
                    _loop(source, args, keys, screen)
                finally:
                    signal.signal(signal.SIGTSTP, old_tstp)
        except KeyboardInterrupt:
            pass                    # Ctrl-C is how one leaves top: not an error
        finally:
            signal.signal(signal.SIGTERM, old_term)
    return EXIT_OK


def _loop(source: LogSource, args: Any, keys: Keys, screen: Any) -> None:
    prev = None
    refreshes = 0
    due = time.monotonic()
    while True:
        forget_replaced_topics(source.get())
        cur = take_snapshot(source.get(), time.monotonic())
        screen.draw(build_view(prev, cur, args.interval), time.strftime("%H:%M:%S"),
                    prev is None)
        refreshes += 1
        if args.iterations is not None and refreshes >= args.iterations:
            return
        prev = cur
        due = max(due + args.interval, time.monotonic())
        while True:
            left = due - time.monotonic()
            if left <= 0:
                break
            if "q" in keys.wait(left).lower():
                return
