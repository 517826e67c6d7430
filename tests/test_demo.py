"""`pylog demo` runs the whole story and ends with its proof."""

import os
import re
import subprocess
import sys

import pylog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_fast_finishes_with_summary(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT
    # jobs of examples/email_workers.py wait in the same topic (README's
    # `pylog top` recipe runs both on one log): the act's workers do them
    # and count only the act's own (they crashed on them)
    with pylog.open(tmp_path / "d") as log:
        log.create_topic("emails", partitions=1)
        log.producer().send_batch("emails", [b"user1@example.com", b"user2@example.com"])
    r = subprocess.run([sys.executable, "-m", "pylog.cli", "demo", str(tmp_path / "d"),
                        "--fast"], capture_output=True, env=env, timeout=120)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "\x1b[" not in out                       # not a tty: plain lines
    assert "SIGKILL" in out and "restarted" in out and "resumed at" in out
    assert "Summary" in out and "MISSING" in out
    assert "every one of the" in out and "pylog verify: log is sound" in out
    rows = [line.split() for line in out.splitlines()
            if line.strip().startswith(("inventory-service", "email-service",
                                        "fraud-service")) and len(line.split()) == 5]
    assert len(rows) == 3
    for name, produced, processed, dups, missing in rows:
        assert produced == processed and missing == "0" and int(produced) > 0
    # act 2: the e-mail worker pool; the provider's failures are random,
    # so jobs parked at the delivery limit are counted from the act's report
    assert "Act 2: a work queue. 30 e-mail jobs" in out
    m = re.search(r"SIGKILL -> mailer-1 \(pid \d+\) in the middle of job (\d+)", out)
    assert m, out
    assert re.search(rf"job {m.group(1)} taken by mailer-[23] within \d+ ms of the kill", out)
    assert out.count("(rejected, at delivery 1)") == 3           # jobs 7, 17, 27
    for job in (7, 17, 27):
        assert f"parked in emails.dlq: job {job} (rejected" in out
    m = re.search(r"OK: all 30 jobs in [\d.]+ s: (\d+) sent once each, (\d+) parked "
                  r"\(3 poison, (\d+) failed at every try\)", out)
    assert m, out
    sent, parked, by_limit = map(int, m.groups())
    assert sent + parked == 30 and parked == 3 + by_limit
    assert out.count("(delivery_limit, at delivery 4)") == by_limit
    assert f"available 0, acquired 0, delayed 0, archived {parked} " in out
    # the log is left for exploration and the CLI can read it
    r = subprocess.run([sys.executable, "-m", "pylog.cli", "info", str(tmp_path / "d")],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0 and b"email-service" in r.stdout


def test_demo_workers_ignore_a_checkout_in_the_callers_directory(tmp_path):
    """Regression: README's first command runs `pylog demo` from the source
    checkout after a non-editable install; the workers (`python -m
    pylog.demo`) used to start in the caller's directory, where the checkout
    (without the compiled extension) shadowed the installed package. Here a
    decoy `pylog` package in the caller's directory must not be imported."""
    caller = tmp_path / "caller"
    (caller / "pylog").mkdir(parents=True)
    (caller / "pylog" / "__init__.py").write_text(
        "raise ImportError('decoy pylog imported from the caller directory')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT
    launcher = ("import sys; sys.path.insert(0, %r); "
                "from pylog.cli import main; sys.exit(main())" % ROOT)
    r = subprocess.run([sys.executable, "-c", launcher, "demo", str(tmp_path / "log"),
                        "--fast"], cwd=caller, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "decoy" not in r.stdout + r.stderr
