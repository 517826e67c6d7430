"""Plain aligned text tables for the command line and the demo.

Pure functions: thread-safe.
"""

from __future__ import annotations


def table(rows, headers, right=None) -> str:
    """Plain aligned text table; ``right`` lists right-aligned columns."""
    right = set(right or ())
    cells = [[("-" if v is None else str(v)) for v in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, v in enumerate(r):
            widths[i] = max(widths[i], len(v))

    def fmt(r):
        return "  ".join((v.rjust(widths[i]) if i in right else v.ljust(widths[i]))
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
