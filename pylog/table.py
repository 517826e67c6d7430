"""Plain aligned text tables for the command line and the demo, and the
safe rendering of what users named or wrote (bytes of records, group
ids): printable text as is, anything else escaped, so that no value can
forge a line or send escape sequences to the operator's terminal.

Pure functions: thread-safe.
"""

from __future__ import annotations

import unicodedata


def safe_text(data) -> str | None:
    """Printable text as is; anything else escaped (``\\x00``, ``\\n``)."""
    if data is None:
        return None
    data = bytes(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isprintable():
        return text
    out = []
    if text is not None:
        for ch in text:
            if ch.isprintable() and ch != "\\":
                out.append(ch)
            elif ch == "\\":
                out.append("\\\\")
            else:
                out.append(ch.encode("unicode_escape").decode("ascii"))
        return "".join(out)
    for b in data:
        if 0x20 <= b < 0x7f and b != 0x5c:
            out.append(chr(b))
        elif b == 0x5c:
            out.append("\\\\")
        else:
            out.append({0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t"}.get(b, f"\\x{b:02x}"))
    return "".join(out)


def is_text(data) -> bool:
    """Whether ``data`` (bytes, or None) is printable UTF-8: shown as is."""
    if data is None:
        return True
    try:
        return bytes(data).decode("utf-8").isprintable()
    except UnicodeDecodeError:
        return False


def escape_text(text: str) -> str:
    """``text`` (a str) as :func:`safe_text` shows it: printable as is,
    control characters escaped (``\\n``, ``\\x1b``)."""
    if text.isprintable():
        return text
    return safe_text(text.encode("utf-8", "surrogatepass")) or ""


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide East Asian characters two,
    combining marks none, others one."""
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def clip(text: str, width: int) -> str:
    """The longest start of ``text`` that fits in ``width`` columns."""
    used = 0
    for i, ch in enumerate(text):
        used += display_width(ch)
        if used > width:
            return text[:i]
    return text


def table(rows, headers, right=None) -> str:
    """Plain aligned text table; ``right`` lists right-aligned columns.
    Cells are escaped (:func:`escape_text`; None shows as ``-``) and
    aligned by their display width."""
    right = set(right or ())
    cells = [[("-" if v is None else escape_text(str(v))) for v in r] for r in rows]
    widths = [display_width(h) for h in headers]
    for r in cells:
        for i, v in enumerate(r):
            widths[i] = max(widths[i], display_width(v))

    def fmt(r):
        pads = [" " * (widths[i] - display_width(v)) for i, v in enumerate(r)]
        return "  ".join((pads[i] + v if i in right else v + pads[i])
                         for i, v in enumerate(r)).rstrip()
    lines = [fmt(headers), fmt(["-" * w for w in widths])]
    lines.extend(fmt(r) for r in cells)
    return "\n".join(lines)


def human_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return str(n)
