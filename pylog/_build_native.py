"""cffi (API mode) build script for ``pylog._pylog_native``.

Used by setup.py (``cffi_modules=["pylog/_build_native.py:ffibuilder"]``);
paths are relative to the repository root, where setup.py runs.

The cffi declarations are csrc/pylog_native.h itself, run through the C
preprocessor with ``PL_CDEF`` defined (which hides its system includes and
static assertions): what the compiler sees is what cffi sees, with no
parsing of our own. Constants are enums in the header for that reason (the
preprocessor drops #defines; cffi reads enums).
"""

import glob
import os
import shlex
import subprocess
import sysconfig

import cffi

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
_CSRC = os.path.join(_ROOT, "csrc")
HEADER = os.path.join(_CSRC, "pylog_native.h")


def _compiler() -> list:
    """The C compiler command (CC from the environment, else Python's own)."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def cdef_from_header(path: str = HEADER) -> str:
    """The declarations cffi needs: ``path`` preprocessed with PL_CDEF."""
    cmd = _compiler() + ["-E", "-P", "-DPL_CDEF", "-x", "c", path]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise RuntimeError(f"preprocess {path} with {cmd[0]}: {e} (a C compiler is "
                           "needed to build pylog)") from e
    if r.returncode != 0:
        raise RuntimeError(f"preprocess {path}: {' '.join(cmd)} failed:\n{r.stderr}")
    return r.stdout


def _sources() -> list:
    """csrc/*.c, relative to the repository root when run from there
    (setup.py), absolute otherwise."""
    files = sorted(glob.glob(os.path.join(_CSRC, "*.c")))
    if os.path.abspath(os.getcwd()) == _ROOT:
        return [os.path.relpath(f, _ROOT) for f in files]
    return files


ffibuilder = cffi.FFI()
ffibuilder.cdef(cdef_from_header())
ffibuilder.set_source(
    "pylog._pylog_native",
    '#include "pylog_native.h"',
    sources=_sources(),
    include_dirs=["csrc" if os.path.abspath(os.getcwd()) == _ROOT else _CSRC],
    depends=[HEADER, os.path.join(_CSRC, "internal.h")],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
