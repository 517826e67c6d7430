"""Imports point one way (STYLE.md §3): a module may import only modules of
its own or a lower layer. Leaves (errors, config, records, assignors) are
importable from anywhere."""

import ast
import os

import pylog

LAYERS = [
    {"errors", "config", "records", "assignors", "table", "gcpause", "_build_native",
     "files"},
    {"_native"},
    {"batch", "index"},
    {"segment", "identity", "metalock", "topicdirs"},
    {"sharedstate"},
    {"retention"},
    {"reader", "writer", "recovery"},
    {"partition"},
    {"metadata", "topicadmin"},
    {"store"},
    {"group", "delivery", "deadletter", "deserialize", "offsetreset"},
    {"producer", "consumer"},
    {"log"},
    {"__init__"},
    {"verify", "demo"},
    {"cli", "cli_args"},
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
PKG = os.path.dirname(pylog.__file__)


def imports_of(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                yield node.module.split(".")[0]
            else:
                for alias in node.names:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pylog"):
            parts = node.module.split(".")
            yield parts[1] if len(parts) > 1 else "__init__"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pylog."):
                    yield alias.name.split(".")[1]


def test_every_module_has_a_layer():
    mods = {f[:-3] for f in os.listdir(PKG) if f.endswith(".py")}
    assert mods <= set(RANK), f"give these a layer: {mods - set(RANK)}"


def test_imports_point_down():
    bad = []
    for f in sorted(os.listdir(PKG)):
        if not f.endswith(".py"):
            continue
        mod = f[:-3]
        for dep in imports_of(os.path.join(PKG, f)):
            if dep == "_pylog_native":
                if mod != "_native":
                    bad.append((mod, dep))
                continue
            if RANK.get(dep, -1) > RANK[mod]:
                bad.append((mod, dep))
    assert not bad, f"imports pointing up the layers: {bad}"


def test_only_native_touches_ffi():
    for f in os.listdir(PKG):
        if f.endswith(".py") and f not in ("_native.py", "_build_native.py"):
            src = open(os.path.join(PKG, f), encoding="utf-8").read()
            assert "_pylog_native" not in src and "import cffi" not in src, f


def test_no_pickle():
    for f in os.listdir(PKG):
        if f.endswith(".py"):
            src = open(os.path.join(PKG, f), encoding="utf-8").read()
            assert "pickle" not in src, f
