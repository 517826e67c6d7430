"""Progress of long commands (``verify``, ``dump``, ``info`` on a damaged
log) on stderr.

Shown only when stderr is a terminal, ``--quiet`` was not given and the
work is large (at least :data:`MIN_BYTES`: smaller logs are checked in a
blink); drawn with rich's progress bar when rich is installed (the
``pylog[top]`` extra), else as one line rewritten in place with ``\\r``.
Either way the line is erased when the work ends, so what the command
prints afterwards reads as it would without it. stdout is never touched.

Thread safety: one instance per command, called from its main thread.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ..table import human_bytes

MIN_BYTES = 8 << 20
REDRAW_S = 0.1
WIDTH = 30


def progress_for(args: Any, label: str) -> Progress:
    """The progress display of a command run with ``args``: silent with
    ``--quiet`` or when stderr is no terminal."""
    return Progress(label, enabled=not getattr(args, "quiet", False)
                    and sys.stderr.isatty())


def add_quiet(parser: Any) -> None:
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress display on stderr")


class Progress:
    """``progress(done, total)`` as work advances (bytes); ``close()`` at
    the end (also as a context manager)."""

    def __init__(self, label: str, enabled: bool = True, use_rich: bool | None = None) -> None:
        self.label = label
        self.enabled = enabled
        self.last = 0.0
        self.shown = False
        self._rich: Any = None
        self._task: Any = None
        if use_rich is None:
            try:
                import rich.progress  # noqa: F401
                use_rich = True
            except ImportError:
                use_rich = False
        self.use_rich = use_rich

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if total < MIN_BYTES or (self.shown and now - self.last < REDRAW_S and done < total):
            return
        self.last = now
        if self.use_rich:
            self._draw_rich(done, total)
        else:
            frac = min(1.0, done / total) if total else 1.0
            fill = int(frac * WIDTH)
            sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (WIDTH - fill)}] "
                             f"{frac * 100:5.1f}% {human_bytes(done)}/{human_bytes(total)}"
                             "\x1b[K")
            sys.stderr.flush()
        self.shown = True

    def _draw_rich(self, done: int, total: int) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress
            self._rich = RichProgress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                DownloadColumn(binary_units=True), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True, auto_refresh=False)
            self._rich.start()
            self._task = self._rich.add_task(self.label, total=total)
        self._rich.update(self._task, completed=done, total=total)
        self._rich.refresh()

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()           # transient: the bar is erased
            self._rich = None
        elif self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        self.shown = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
