"""The manual's API reference (docs/api.rst) leaves out no public method
of the classes it documents: an ``autoclass`` with a bare ``:members:``
lists only what the class defines itself, so a method that a mixin or a
base class of pylog's provides is missing unless the directive also has
``:inherited-members:`` (the AIOConsumer methods of pylog.aio.offsets
were once left out that way)."""

from __future__ import annotations

import importlib
import inspect
import os
import re

import pytest

API = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "docs", "api.rst")


def _directives() -> list[tuple[str, set[str]]]:
    """(class path, its option names) of every autoclass of api.rst."""
    out: list[tuple[str, set[str]]] = []
    for block in re.split(r"\n(?=\.\. )", open(API, encoding="utf-8").read()):
        m = re.match(r"\.\. autoclass:: (\S+)\n((?:   .*\n?)*)", block)
        if m:
            opts = {o.split(":")[1] for o in m.group(2).split("\n")
                    if o.strip().startswith(":")}
            bare = re.search(r"^   :members:\s*$", m.group(2), re.M) is not None
            out.append((m.group(1), opts | ({"bare-members"} if bare else set())))
    return out


def _load(path: str) -> type:
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert inspect.isclass(cls), path
    return cls


def _pylog_inherited(cls: type) -> list[str]:
    """Public documented methods of ``cls`` that a base class of pylog's
    defines, not ``cls`` itself."""
    out = []
    for base in cls.__mro__[1:]:
        if not base.__module__.startswith("pylog"):
            continue
        for name, value in vars(base).items():
            if name.startswith("_") or name in vars(cls):
                continue
            if callable(value) and getattr(value, "__doc__", None):
                out.append(f"{base.__name__}.{name}")
    return out


def test_the_parser_sees_the_directives() -> None:
    found = dict(_directives())
    assert "pylog.aio.AIOConsumer" in found
    assert "bare-members" in found["pylog.aio.AIOConsumer"]


def _members_alone() -> list[str]:
    return [path for path, opts in _directives()
            if "bare-members" in opts and "inherited-members" not in opts]


@pytest.mark.parametrize("path", _members_alone())
def test_no_inherited_method_is_left_out(path: str) -> None:
    missing = _pylog_inherited(_load(path))
    assert not missing, (f"docs/api.rst documents {path} with :members: alone, "
                         f"which leaves out {missing}: add :inherited-members:")



def test_public_calls_have_docstrings():
    """A user trial: Log.topics and Log.describe_topic, PartitionInfo and
    a few pylog.aio members showed in the API reference with no text."""
    import pylog
    import pylog.aio
    from pylog.aio.consumer import AIOConsumer
    from pylog.aio.shareconsumer import AIOShareConsumer
    for obj in (pylog.Log.topics, pylog.Log.describe_topic, pylog.aio.AIOLog.log,
                AIOConsumer.paused, AIOConsumer.subscription, AIOShareConsumer.group_id):
        assert (obj.__doc__ or "").strip(), obj
    # (a NamedTuple without a docstring gets "PartitionInfo(partition, ...)")
    assert not pylog.PartitionInfo.__doc__.startswith("PartitionInfo(")
