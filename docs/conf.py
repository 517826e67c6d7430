"""Sphinx configuration of pylog's reference manual.

Build (CI does, with warnings as errors):
``sphinx-build -W -b html docs docs/_build/html``. The API pages are
autodoc of the docstrings; the guide is README.rst and the format is
FORMAT.rst, both included where they live so each stays the one source.
"""

import os
import sys

# autodoc imports the package of this checkout (built in place by
# pip install -e), not whatever pylog another path holds
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import pylog  # noqa: E402

project = "pylog"
author = "the pylog developers"
copyright = "the pylog developers"
version = release = pylog.__version__

extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build"]
root_doc = "index"

# Signatures show the annotations; the descriptions are the docstrings.
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
# README.rst's ``.. snippet:`` comments and FORMAT.rst's contents are plain
# reStructuredText: nothing to configure for them.
html_theme = "alabaster"
html_static_path: list[str] = []
