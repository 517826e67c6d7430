"""Build script: the package and its cffi (API mode) extension.

`pip install .` compiles csrc/ into ``pylog._pylog_native`` with the system C
compiler; nothing else is needed on a fresh Linux machine with gcc and the
Python headers.
"""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    """pylog.__version__, the one place the version is written (importing
    pylog here would need the extension this script builds)."""
    with open(os.path.join(HERE, "pylog", "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if m is None:
        raise RuntimeError("pylog/__init__.py: no __version__ line")
    return m.group(1)


TEST_REQUIRES = [
    "pytest>=7",
    "pytest-benchmark>=4",
    "pytest-timeout>=2",
    "hypothesis>=6",
    # independent oracles (tests/test_native.py, tests/test_segment.py)
    "kafka-python>=2.0.2",
    "crc32c>=2.3",
    # the packaging check and the linter of .ci/run
    "build>=1",
    "ruff>=0.4",
    "mypy>=1.8",
    # tests/test_aio.py runs pylog.aio under uvloop too (none for Windows)
    "uvloop>=0.18; sys_platform != 'win32'",
    # tests/test_top.py and test_progress.py draw with rich too
    "rich>=13",
    # tests/test_metrics.py scrapes the Prometheus exporter (the metrics extra)
    "prometheus_client>=0.17",
    # tests/test_outbox*.py: the outbox on PostgreSQL
    "psycopg[binary]>=3.2",
    # pylog.mirror against a Kafka-compatible broker the tests start
    # (tests/kafkabroker.py: noida-db ships one binary, Linux x86-64)
    "confluent-kafka>=2.3",
    "noida-db>=0.2.3; sys_platform == 'linux' and platform_machine == 'x86_64'",
]

# ``pylog top`` and the progress bars draw with rich when it is installed
# (plain text without it): pip install 'pylog[top]'.
TOP_REQUIRES = ["rich>=13"]

# pylog metrics LOG --serve: the Prometheus exporter (pylog.metricsprom)
METRICS_REQUIRES = ["prometheus_client>=0.17"]

# pylog.outbox on PostgreSQL: pip install 'pylog[outbox]' (SQLite needs nothing)
OUTBOX_REQUIRES = ["psycopg[binary]>=3.2"]

# pylog.mirror: mirroring to and from Apache Kafka through librdkafka
KAFKA_REQUIRES = ["confluent-kafka>=2.3"]

# The peers bench/compare.py measures pylog against, installed only on
# request: pip install -e '.[bench]' (see bench/README-compare.txt).
BENCH_REQUIRES = ["redis>=4", "persist-queue>=0.8", "litequeue>=0.9", "pika>=1.3"]

setup(
    name="pylog",
    version=read_version(),
    description="An embedded, durable, partitioned event log: Kafka's model as a library",
    long_description=open(os.path.join(HERE, "README.rst"), encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.10",
    packages=find_packages(include=["pylog", "pylog.*"]),
    package_data={"pylog": ["py.typed"]},
    setup_requires=["cffi>=1.15"],
    cffi_modules=["pylog/_build_native.py:ffibuilder"],
    install_requires=["cffi>=1.15", "lmdb>=1.4", "zstandard>=0.21"],
    extras_require={"test": TEST_REQUIRES, "bench": BENCH_REQUIRES, "docs": ["sphinx>=7"],
                    "top": TOP_REQUIRES,
                    "metrics": METRICS_REQUIRES,
                    "outbox": OUTBOX_REQUIRES,
                    "kafka": KAFKA_REQUIRES},
    entry_points={"console_scripts": ["pylog=pylog.cli:main"]},
    zip_safe=False,
)
