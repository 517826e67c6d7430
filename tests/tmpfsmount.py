"""A small tmpfs mounted for one test: the way to make a real full disk
(ENOSPC) without filling the machine's."""

import contextlib
import subprocess
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def mounted_tmpfs(parent, size: str) -> Iterator[str]:
    """The path of a tmpfs of ``size`` (mount's ``size=``, e.g. "4m")
    mounted at ``parent``/mnt, lazily unmounted after the block. Skips the
    test where it cannot be mounted (needs root or CAP_SYS_ADMIN)."""
    mnt = parent / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): "
                    + r.stderr.decode().strip())
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
