"""A process stopped (SIGSTOP) inside a metadata write transaction, for
the tests of what other processes do meanwhile (FORMAT.rst L-7)."""

import os
import signal
import subprocess
import sys

import childproc

# enters a metadata write transaction the way a consumer's heartbeat does
# (Metadata.update_group) and says so
HOLDER = r"""
import sys, time, pylog
log = pylog.open(sys.argv[1])
def hold(doc, commit):
    print("holding", flush=True)
    time.sleep(3600)
log.meta.update_group("g-holder", hold)
"""


def start_stopped_holder(logdir, env) -> subprocess.Popen:
    """The holder process of the log at ``logdir``, SIGSTOPped inside its
    transaction; end it with :func:`end_holder`."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, logdir], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        childproc.expect(child, b"holding")
        os.kill(child.pid, signal.SIGSTOP)
    except BaseException:
        end_holder(child)
        raise
    return child


def end_holder(child: subprocess.Popen) -> None:
    """Kill the holder (continued, so that the kill takes) and reap it."""
    if child.poll() is None:
        child.kill()
        os.kill(child.pid, signal.SIGCONT)
    child.wait(10)
