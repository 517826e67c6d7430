"""The machine's shared services (PostgreSQL, RabbitMQ, Redis, NATS) as test
preconditions. On a user's machine without one, the test skips with a reason
that starts with ``needs service:``; with ``PYLOG_REQUIRE_SERVICES=1`` (set by
``.ci/run``) conftest turns exactly those skips into failures, so CI cannot
pass by not testing."""

import socket

import pytest

SKIP_PREFIX = "needs service:"

PORTS = {"postgresql": 5432, "rabbitmq": 5672, "redis": 6379, "nats": 4222}


def reachable(port, host="127.0.0.1", timeout=1.0):
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(name):
    """Skip the calling test unless service ``name`` (a key of PORTS) answers
    on 127.0.0.1."""
    port = PORTS[name]
    if not reachable(port):
        pytest.skip(f"{SKIP_PREFIX} {name} on 127.0.0.1:{port} is not reachable")


def require_module(name, service):
    """Import and return module ``name``, which the test extra installs; a
    missing one skips like a missing service (and fails CI the same way)."""
    return pytest.importorskip(name, reason=f"{SKIP_PREFIX} {service} client {name} "
                               "is not installed")
