"""cffi (API mode) build script for ``pylog._pylog_native``.

Used by setup.py (``cffi_modules=["pylog/_build_native.py:ffibuilder"]``);
paths are relative to the repository root, where setup.py runs.
"""

import os
import re

import cffi

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
_CSRC = os.path.join(_ROOT, "csrc")


def _cdef_from_header(path):
    """The declarations of pylog_native.h that cffi needs (no preprocessor)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#define PL_") and len(s.split()) >= 3:
            name, value = s.split()[1], " ".join(s.split()[2:])
            value = value.strip("()")
            if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)u?", value):
                out.append(f"#define {name} ...")
            continue
        if s.startswith("#"):
            continue
        out.append(line)
    return "\n".join(out)


def _src(rel):
    if os.path.abspath(os.getcwd()) == _ROOT:
        return rel
    return os.path.join(_ROOT, rel)


ffibuilder = cffi.FFI()
ffibuilder.cdef(_cdef_from_header(os.path.join(_CSRC, "pylog_native.h")))
ffibuilder.set_source(
    "pylog._pylog_native",
    '#include "pylog_native.h"',
    # relative paths when run from the repo root (setup.py), absolute otherwise
    sources=[_src("csrc/pylog_native.c")],
    include_dirs=[_src("csrc")],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
