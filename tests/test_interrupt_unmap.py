"""A Ctrl-C caught by the application inside a segment's unmap (a send
growing the active segment drops its map) leaves the producer usable.

The interrupt is placed at each line of ``Segment.unmap`` in turn with a
trace function, where a SIGINT's handler would raise it; the application
catches it and goes on sending with the same producer (README: "A process
that *catches* it and goes on using the same Log").
"""

from __future__ import annotations

import sys

import pylog
from pylog.segment import Segment


def _interrupt_at_line(step: int):
    """A trace function raising KeyboardInterrupt at the ``step``-th line
    event of the first Segment.unmap call; ``fired`` says whether it did."""
    fired: list[int] = []
    seen = [0]

    def trace(frame, event, arg):
        if frame.f_code is not Segment.unmap.__code__ or fired:
            return None

        def local(frame, event, arg):
            if event == "line" and not fired:
                if seen[0] == step:
                    fired.append(frame.f_lineno)
                    raise KeyboardInterrupt
                seen[0] += 1
            return local
        return local
    return trace, fired


def test_ctrl_c_at_any_line_of_unmap_leaves_sends_working(tmp_path):
    lines = []
    for step in range(40):
        root = str(tmp_path / f"log{step}")
        with pylog.open(root, sync="never") as log:
            log.create_topic("t", partitions=1)
            p = log.producer()
            p.send("t", b"first")
            trace, fired = _interrupt_at_line(step)
            sys.settrace(trace)
            try:
                p.send("t", b"y" * 1_000_000)       # grows the active segment
            except KeyboardInterrupt:
                pass
            finally:
                sys.settrace(None)
            if not fired:
                break                   # past unmap's last line
            lines.append(fired[0])
            for i in range(3):
                p.send("t", b"after-%d" % i)
            c = log.consumer("t", auto_offset_reset="earliest")
            values = [r.value for r in c.poll(timeout=1.0, max_records=100)]
            c.close()
            assert values[0] == b"first" and values[-3:] == [b"after-0", b"after-1",
                                                             b"after-2"], (step, values)
    assert len(set(lines)) >= 4, lines      # the interrupt met unmap's lines
