"""The quotes of tests/promises/ are the README's words.

Each test here quotes, as the first paragraph of its docstring, the
README.rst sentence(s) it tries to break. If the README changes a promise,
this test names the tests whose quote no longer matches: change the test
with the promise (or take the promise out with its test)."""

import ast
import glob
import os

from promisekit import HERE, normalize, readme_text


def _tests():
    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        if os.path.basename(path) == os.path.basename(__file__):
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield os.path.basename(path), node.name, ast.get_docstring(node)


def _quote(doc):
    first = doc.strip().split("\n\n", 1)[0]
    return normalize(first)


def test_every_promise_test_quotes_the_readme():
    """Tests without a README quote, or whose quote is not in README.rst."""
    readme = normalize(readme_text())
    tests = list(_tests())
    assert len(tests) > 50
    missing = [f"{f}::{n}" for f, n, d in tests if not d]
    assert not missing, f"promise tests without a docstring quote: {missing}"
    stale = [f"{f}::{n}: {_quote(d)[:100]!r}" for f, n, d in tests
             if _quote(d) not in readme]
    assert not stale, "quotes not (or no longer) in README.rst:\n" + "\n".join(stale)
