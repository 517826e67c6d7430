"""Every Python code block of README.rst and docs/*.rst runs as written.

A snippet that fails when a user copies it fails the build. The rules the
documents follow:

- ``.. code-block:: python`` blocks and bare ``::`` literal blocks are
  Python. Each runs alone, in a fresh process (this checkout on
  ``PYTHONPATH``) whose working directory is a fresh empty directory, so
  relative paths such as ``"data/events"`` create a new log there. A block
  therefore brings its own imports and opens its own log.
- Shell commands and other text use ``.. code-block:: shell`` (or
  ``console``, ``text``, ``none``): never run.
- A Python block that cannot run by itself (it blocks until another
  thread acts, it continues a fragment) is preceded by the RST comment
  ``.. snippet: not run: <why>`` (invisible once rendered). The reason is
  required, and the count of such blocks is bounded below, so skipping
  cannot become the way to quiet a failure.

Documents included by others (FORMAT.rst, and README.rst into docs/) are
read where they live, once.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from typing import NamedTuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ["README.rst", *sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.rst")))]
PYTHON_LANGUAGES = ("python", "python3", "py")
NOT_PYTHON_LANGUAGES = ("shell", "console", "bash", "sh", "text", "none", "rst", "ini",
                        "toml")
NOT_RUN_MARKER = re.compile(r"^\.\. snippet: not run: (?P<why>\S.*)$")
NOT_RUN_MAX = 3            # every document together; raise it with a reason
SNIPPET_TIMEOUT_S = 120    # a hung snippet fails with its output
DIRECTIVE = re.compile(r"^\s*\.\. (code-block|code|sourcecode)::\s*(?P<lang>\S*)\s*$")


class Snippet(NamedTuple):
    document: str      # path relative to the checkout
    line: int          # 1-based line of the block's first code line
    language: str      # "python" for bare :: blocks
    code: str
    not_run: str | None   # the reason given by a not-run marker


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _block(lines: list[str], start: int, parent_indent: int) -> tuple[int, int, str]:
    """The indented block after ``lines[start]`` (skipping directive options
    and blank lines): (index of its first line, index past its end, its
    dedented text)."""
    i = start + 1
    while i < len(lines) and (not lines[i].strip()
                              or lines[i].lstrip().startswith(":")
                              and _indent(lines[i]) > parent_indent):
        i += 1
    first = i
    body: list[str] = []
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > parent_indent):
        body.append(lines[i])
        i += 1
    end = i
    while body and not body[-1].strip():
        body.pop()
    if not body:
        return first, end, ""
    cut = min(_indent(b) for b in body if b.strip())
    return first, end, "\n".join(b[cut:] for b in body) + "\n"


def extract(document: str) -> list[Snippet]:
    """The literal blocks of ``document`` (a path relative to the checkout)."""
    with open(os.path.join(ROOT, document), encoding="utf-8") as f:
        lines = f.read().splitlines()
    found: list[Snippet] = []
    not_run: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = NOT_RUN_MARKER.match(line.strip())
        directive = DIRECTIVE.match(line)
        if marker:
            not_run = marker.group("why")
        elif directive or (line.rstrip().endswith("::") and line.strip() != "::"
                           and not line.lstrip().startswith("..")) \
                or line.strip() == "::":
            language = directive.group("lang") if directive else "python"
            first, end, code = _block(lines, i, _indent(line))
            if code:
                found.append(Snippet(document, first + 1, language, code, not_run))
                not_run = None
                i = end
                continue
        i += 1
    return found


def _all() -> list[Snippet]:
    return [s for d in DOCUMENTS for s in extract(d)]


def _runnable() -> list[Snippet]:
    return [s for s in _all() if s.language in PYTHON_LANGUAGES and s.not_run is None]


def test_every_block_is_python_or_says_what_it_is():
    """A code-block of an unknown language would be neither run nor
    knowingly skipped."""
    unknown = [f"{s.document}:{s.line} ({s.language})" for s in _all()
               if s.language not in PYTHON_LANGUAGES + NOT_PYTHON_LANGUAGES]
    assert not unknown, f"code blocks of a language this test does not know: {unknown}"


def test_the_extractor_finds_the_readme_snippets():
    readme = [s for s in _runnable() if s.document == "README.rst"]
    assert len(readme) >= 9, [f"{s.document}:{s.line}" for s in readme]
    skipped = [s for s in _all() if s.not_run is not None]
    assert len(skipped) <= NOT_RUN_MAX, (
        "more blocks marked '.. snippet: not run:' than NOT_RUN_MAX: "
        + ", ".join(f"{s.document}:{s.line} ({s.not_run})" for s in skipped))
    assert all(s.language in PYTHON_LANGUAGES for s in skipped), (
        "a not-run marker before a block that is not Python: mark only Python")


def test_extract_reads_both_block_forms():
    """The extractor itself, on a document of every form it must tell apart."""
    sample = os.path.join(ROOT, "tests", "_snippet_sample.rst")
    text = ("Intro::\n\n    a = 1\n\nShell:\n\n.. code-block:: shell\n\n    ls -l\n\n"
            ".. snippet: not run: loops forever\n\n.. code-block:: python\n"
            "   :caption: x\n\n    while True:\n        pass\n\nEnd.\n")
    with open(sample, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        got = extract(os.path.relpath(sample, ROOT))
    finally:
        os.unlink(sample)
    assert [(s.line, s.language, s.code, s.not_run) for s in got] == [
        (3, "python", "a = 1\n", None),
        (9, "shell", "ls -l\n", None),
        (16, "python", "while True:\n    pass\n", "loops forever"),
    ]


@pytest.mark.parametrize("snippet", _runnable(), ids=lambda s: f"{s.document}:{s.line}")
def test_snippet_runs_as_written(snippet: Snippet, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    script = tmp_path / "snippet.py"
    script.write_text(snippet.code, encoding="utf-8")
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(script)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=SNIPPET_TIMEOUT_S)
    assert proc.returncode == 0, (
        f"{snippet.document}:{snippet.line}: the snippet fails as written "
        f"(exit {proc.returncode})\n--- code ---\n{snippet.code}"
        f"--- stdout ---\n{proc.stdout}--- stderr ---\n{proc.stderr}")
