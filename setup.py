"""Build script: the package and its cffi (API mode) extension.

`pip install .` compiles csrc/ into ``pylog._pylog_native`` with the system C
compiler; nothing else is needed on a fresh Linux machine with gcc and the
Python headers.
"""

from setuptools import setup, find_packages

TEST_REQUIRES = [
    "pytest>=7",
    "pytest-benchmark>=4",
    "pytest-timeout>=2",
    "hypothesis>=6",
    # independent oracles (tests/test_native.py, tests/test_segment.py)
    "kafka-python>=2.0.2",
    "crc32c>=2.3",
]

setup(
    name="pylog",
    version="0.1.0",
    description="An embedded, durable, partitioned event log: Kafka's model as a library",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.10",
    packages=find_packages(include=["pylog", "pylog.*"]),
    setup_requires=["cffi>=1.15"],
    cffi_modules=["pylog/_build_native.py:ffibuilder"],
    install_requires=["cffi>=1.15", "lmdb>=1.4", "zstandard>=0.21"],
    extras_require={"test": TEST_REQUIRES,
                    "bench": ["redis>=4", "persist-queue>=0.8"]},
    entry_points={"console_scripts": ["pylog=pylog.cli:main"]},
    zip_safe=False,
)
