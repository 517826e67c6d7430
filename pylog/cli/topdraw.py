"""Drawing a ``pylog top`` view: plain text lines, or rich tables.

Both are pure functions of a :class:`~.topmodel.View` (and the size of the
screen); neither writes to the terminal. :func:`rich_view` imports ``rich``
(the ``pylog[top]`` extra) and is only called when it is installed.

Thread safety: pure functions.
"""

from __future__ import annotations

from typing import Any

from ..table import clip, escape_text, human_bytes, table
from .topmodel import View

BAR_WIDTH = 20
HINT = "q: quit"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """``fraction`` (0..1) as a bar of ``#`` on ``.``, ``width`` cells."""
    fill = round(max(0.0, min(1.0, fraction)) * width)
    return "#" * fill + "." * (width - fill)


def rate(r: float | None) -> str:
    """Records per second, ``-`` before the first delta is known."""
    if r is None:
        return "-"
    if r >= 100_000:
        return f"{r / 1000:.0f}k"
    return f"{r:.1f}"


def age(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}s"


def title(view: View, now: str) -> str:
    return f"pylog top  {escape_text(view.path)}  {now}  every {view.interval:g}s  ({HINT})"


def _topic_cells(view: View) -> tuple[list[str], list[list[Any]], set[int]]:
    rows = [[t.name, t.partitions, t.end, t.records, human_bytes(t.size),
             rate(t.produce_rate), rate(t.consume_rate)] for t in view.topics]
    return (["TOPIC", "PARTS", "END", "RECORDS", "SIZE", "PRODUCE/s", "CONSUME/s"],
            rows, {1, 2, 3, 4, 5, 6})


def _group_cells(view: View) -> tuple[list[str], list[list[Any]], set[int]]:
    rows = [[g.name, g.state, g.members, g.lag, rate(g.consume_rate),
             f"{bar(g.lag_fraction)} {g.lag_fraction * 100:3.0f}%"] for g in view.groups]
    return (["GROUP", "STATE", "MEMBERS", "LAG", "CONSUME/s", "LAG (of records kept)"],
            rows, {2, 3, 4})


def _queue_cells(view: View) -> tuple[list[str], list[list[Any]], set[int]]:
    rows = [[q.group, q.topic, q.partitions, q.available, q.in_flight, q.delayed,
             "-" if q.dead is None else q.dead, rate(q.done_rate), age(q.oldest_age_ms)]
            for q in view.queues]
    return (["WORK QUEUE", "TOPIC", "PARTS", "AVAILABLE", "IN FLIGHT", "DELAYED",
             "DEAD", "DONE/s", "OLDEST"], rows, {2, 3, 4, 5, 6, 7, 8})


_SECTIONS = ((_topic_cells, "No topics."), (_group_cells, "No consumer groups."),
             (_queue_cells, "No work queues (share groups)."))


def plain_lines(view: View, now: str, width: int | None = None,
                height: int | None = None) -> list[str]:
    """The view as text lines, cut to ``width`` columns and ``height`` lines
    (None: no limit); the last line says how many were cut."""
    lines = [title(view, now)]
    for cells, empty in _SECTIONS:
        headers, rows, right = cells(view)
        lines.append("")
        lines.extend(table(rows, headers, right=right).splitlines() if rows else [empty])
    for e in view.errors:
        lines.append(f"warning: {escape_text(e)}")
    if width is not None:
        lines = [clip(ln, width) for ln in lines]
    if height is not None and len(lines) > height:
        cut = len(lines) - height + 1
        lines = lines[:height - 1] + [f"... {cut} more lines (enlarge the terminal)"[:width]]
    return lines


def rich_view(view: View, now: str) -> Any:
    """The view as a rich renderable (tables with colored lag bars)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = [Text(title(view, now), style="bold")]
    for cells, empty in _SECTIONS:
        headers, rows, right = cells(view)
        if not rows:
            parts.append(Text(f"\n{empty}", style="dim"))
            continue
        t = Table(box=None, header_style="bold cyan", pad_edge=False)
        for i, h in enumerate(headers):
            t.add_column(h, justify="right" if i in right else "left", no_wrap=True)
        for r in rows:
            t.add_row(*(_cell(v, cells is _group_cells and i == len(r) - 1)
                        for i, v in enumerate(r)))
        parts.append(Text(""))
        parts.append(t)
    for e in view.errors:
        parts.append(Text(f"warning: {escape_text(e)}", style="yellow"))
    return Group(*parts)


def _cell(v: Any, is_bar: bool) -> Any:
    from rich.text import Text
    s = escape_text(str(v))          # as the plain table shows it
    if is_bar:          # a lag bar: colored by how far behind the group is
        fill = s.count("#")
        style = "green" if fill <= BAR_WIDTH // 4 else \
            "yellow" if fill <= BAR_WIDTH * 3 // 4 else "red"
        return Text(s, style=style)
    return Text(s)
