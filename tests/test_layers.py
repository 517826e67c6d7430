"""Imports point one way (STYLE.md §3): a module may import only modules of
its own or a lower layer. Leaves (errors, config, records, assignors) are
importable from anywhere."""

import ast
import os

import pylog

# The modules that wrap the native library (the only ones that may import
# _pylog_native): _native and the parts it is split into.
NATIVE = {"_native", "status", "_buffers", "_scratch", "_rows", "_handoff", "_crossproc",
          "_scan", "cursors", "_columns"}

LAYERS = [
    {"errors", "config", "records", "assignors", "table", "gcpause", "_build_native", "warmup",
     "files", "groupstate", "_format", "liveness", "handles", "futures",
     "_locks", "heartbeat", "forkgate", "inflight"},
    NATIVE,
    {"batch", "index"},
    {"segment", "identity", "metalock", "sharelock", "topicdirs", "metacalls", "metatxn"},
    {"sharedstate", "segmentlist", "producerstate"},
    {"retention", "cleanshutdown"},
    {"reader", "txnreads", "writer", "recovery", "producerappend", "appendsync"},
    {"partition"},
    {"commitgroup", "commitstore", "commitsync"},
    {"metadata", "metafile", "topicadmin", "admin", "expiry"},
    {"store"},
    {"group", "delivery", "deadletter", "deserialize", "offsetreset", "consumerargs",
     "rebalance", "sharestate", "shareops", "sharedlq", "shareconfig", "sharewait", "transactions",
     "txnview"},
    {"producer", "consumer", "positions", "fetching", "accumulator", "shareconsumer",
     "redrive", "metrics", "txnproducer"},
    {"polldriver"},     # a Consumer's poll in steps, for pylog.aio
    {"log", "kafka"},   # kafka: the package pylog/kafka/, pylog.open("kafka://...")
    {"sqliteoffsets", "dedup"},     # helpers over the public Consumer API
    {"outbox", "outboxsource"},     # the transactional outbox: table, rows in order
    {"outboxrelay"},                # publishes them through a transactional producer
    {"aio"},          # the package pylog/aio/: asyncio clients over a Log
    {"mirrorstats", "mirrortokafka", "mirrorfromkafka", "mirror"},   # Kafka mirroring
    {"__init__"},
    # loginfo: pylog info's summaries; metricsprom: Prometheus format (an extra);
    # verifylive: what verify finds on a log others change, told from damage;
    # verifyrecords: that the records of the batches it scanned decode
    {"verify", "verifylive", "verifyrecords", "loginfo", "demo", "demoqueue", "metricsprom"},
    {"cli", "__main__"},      # cli: the package pylog/cli/
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
PKG = os.path.dirname(pylog.__file__)


def module_files():
    """(layer name, path) of every module of pylog/: a top-level module is
    its own name; every module of a subpackage (pylog/cli/) is the layer of
    the package's name."""
    for f in sorted(os.listdir(PKG)):
        path = os.path.join(PKG, f)
        if f.endswith(".py"):
            yield f[:-3], path
        elif os.path.isfile(os.path.join(path, "__init__.py")):
            for g in sorted(os.listdir(path)):
                if g.endswith(".py"):
                    yield f, os.path.join(path, g)


def _is_module(parts):
    path = os.path.join(PKG, *parts[1:])
    return os.path.isfile(path + ".py") or os.path.isdir(path)


def imports_of(path):
    """The top-level pylog modules that the module at ``path`` imports
    (relative imports resolved against its package)."""
    package = ["pylog"] + os.path.relpath(os.path.dirname(path), PKG).split(os.sep)
    package = [p for p in package if p != "."]
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            names = [node.module.split(".")] if node.module else \
                [[alias.name] for alias in node.names]
            for name in names:
                full = base + name
                if not node.module and not _is_module(full):
                    full = base         # ``from .. import __version__``
                yield full[1] if len(full) > 1 else "__init__"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pylog"):
            parts = node.module.split(".")
            yield parts[1] if len(parts) > 1 else "__init__"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pylog."):
                    yield alias.name.split(".")[1]


def test_every_module_has_a_layer():
    mods = {mod for mod, _ in module_files()}
    assert mods <= set(RANK), f"give these a layer: {mods - set(RANK)}"


def test_imports_point_down():
    bad = []
    for mod, path in module_files():
        for dep in imports_of(path):
            if dep == "_pylog_native":
                if mod not in NATIVE:
                    bad.append((mod, dep))
                continue
            if RANK.get(dep, -1) > RANK[mod]:
                bad.append((mod, dep))
    assert not bad, f"imports pointing up the layers: {bad}"


def test_only_native_touches_ffi():
    for mod, path in module_files():
        if mod not in NATIVE | {"_build_native"}:
            src = open(path, encoding="utf-8").read()
            assert "_pylog_native" not in src and "import cffi" not in src, path


def test_no_pickle():
    for _, path in module_files():
        src = open(path, encoding="utf-8").read()
        assert "pickle" not in src, path
