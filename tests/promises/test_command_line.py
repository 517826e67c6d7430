"""README "Command line": every command named there exists, ``--help``
lists them with examples, and each works on a real log as a user would
chain them.

(Named test_command_line.py: tests/test_cli.py covers the commands in
detail.)"""

import os
import subprocess
import sys

from promisekit import REPO_ROOT, segments

import pylog

COMMANDS = ["info", "dump", "verify", "tail", "produce", "topics", "groups", "queues", "top",
            "metrics", "outbox", "mirror", "demo"]


def pylog_cli(args, env, stdin=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "pylog.cli", *map(str, args)],
                          input=stdin, capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_help_lists_every_command_with_examples(child_env):
    """``pylog info PATH``, ``pylog dump SEGMENT.log``, ``pylog verify PATH``,
    ``pylog tail``, ``pylog produce``, ``pylog topics``, ``pylog groups``,
    ``pylog queues``, ``pylog top``, ``pylog metrics``, ``pylog outbox`` (install
    an outbox table, run the relay), ``pylog mirror``, ``pylog demo``;
    ``pylog --help`` lists them with examples."""
    r = pylog_cli(["--help"], child_env)
    assert r.returncode == 0
    listed, examples = r.stdout.split("examples:", 1)
    for cmd in COMMANDS:
        assert f"\n    {cmd} " in listed, f"{cmd} not listed"
        assert f"pylog {cmd}" in examples, f"no example of {cmd}"
    # each command's own help, in one process
    code = ("import sys\n"
            "from pylog.cli import main\n"
            "for cmd in sys.argv[1:]:\n"
            "    try:\n"
            "        main([cmd, '--help'])\n"
            "    except SystemExit as e:\n"
            "        print('EXIT', cmd, e.code, flush=True)\n")
    r = subprocess.run([sys.executable, "-c", code, *COMMANDS], capture_output=True,
                       text=True, env=child_env, timeout=60)
    for cmd in COMMANDS:
        assert f"usage: pylog {cmd}" in r.stdout and f"EXIT {cmd} 0" in r.stdout, cmd


def test_commands_work_on_a_real_log(tmp_path, child_env):
    """``pylog info PATH``, ``pylog dump SEGMENT.log``, ``pylog verify PATH``,
    ``pylog tail``, ``pylog produce``, ``pylog topics``, ``pylog groups``,

    produce lines into a new topic, list it, tail it (as a group), see the
    group, info, dump its segment and verify the log: each exits 0 and
    shows what the API shows. (``pylog demo`` runs in tests/test_demo.py.)"""
    path = tmp_path / "log"
    pylog.open(path).close()
    r = pylog_cli(["produce", path, "orders", "--create", "--partitions", "2",
                   "--key-separator", ":"], child_env,
                  stdin="user-1:hello\nuser-2:world\nuser-1:again\n")
    assert r.returncode == 0, r.stderr
    r = pylog_cli(["topics", path], child_env)
    assert r.returncode == 0 and "orders" in r.stdout
    r = pylog_cli(["tail", path, "orders", "--from-beginning", "--group", "cli"], child_env)
    assert r.returncode == 0, r.stderr
    for word in ("hello", "world", "again"):
        assert word in r.stdout
    r = pylog_cli(["groups", path], child_env)
    assert r.returncode == 0 and "cli" in r.stdout
    with pylog.open(path, readonly=True) as log:
        info = log.describe_topic("orders")
        ends = [p.end_offset for p in info.partition_info]
        assert sum(ends) == 3
        committed = {p["partition"]: p["committed"]
                     for p in log.describe_group("cli")["partitions"]}
        assert all(committed.get(p) == e for p, e in enumerate(ends) if e)
    r = pylog_cli(["info", path], child_env)
    assert r.returncode == 0 and "orders" in r.stdout and "cli" in r.stdout
    full = ends.index(max(ends))
    r = pylog_cli(["dump", segments(path, "orders", full)[0], "--records"], child_env)
    assert r.returncode == 0, r.stderr
    assert "offset: 2" in r.stdout and "key: user-1" in r.stdout
    r = pylog_cli(["verify", path], child_env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_demo_is_tested_elsewhere():
    """``pylog demo``; ``pylog --help`` lists them with examples.

    The demo runs producers, three groups and a SIGKILLed consumer for
    several seconds: tests/test_demo.py::test_demo_fast_finishes_with_summary
    runs it; this checks that test is there."""
    src = open(os.path.join(REPO_ROOT, "tests", "test_demo.py")).read()
    assert "def test_demo_fast_finishes_with_summary(" in src
