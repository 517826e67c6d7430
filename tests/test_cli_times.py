"""The CLI's time arguments (``--since``, ``--to-datetime``) mean what a
user types: a year or a month is its start, ``-30s`` needs no ``=``, and
a naive ``datetime.max`` east of UTC is after every record."""

import datetime as dt
import json
import time

import pytest

import pylog
from pylog.cli import main
from pylog.cli.args import CliError, parse_time


def _cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tokyo(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def logdir(tmp_path):
    d = str(tmp_path / "log")
    with pylog.open(d, sync="never") as log:
        log.create_topic("t")
        p = log.producer()
        for i in range(5):
            p.send("t", b"%d" % i)
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        assert len(c.poll(timeout=2)) == 5
        c.commit()
        c.close()
    return d


def test_a_year_or_a_month_is_its_start():
    assert parse_time("2024") == int(dt.datetime(2024, 1, 1).timestamp() * 1000)
    assert parse_time("2024-05") == int(dt.datetime(2024, 5, 1).timestamp() * 1000)
    assert parse_time("20240501") == int(dt.datetime(2024, 5, 1).timestamp() * 1000)
    assert parse_time("0") == 0
    assert parse_time("1714564800000") == 1714564800000


@pytest.mark.parametrize("text", ["1714564800", "86400", "5"])
def test_a_number_too_small_for_epoch_ms_is_refused(text):
    with pytest.raises(CliError, match="ambiguous.*epoch seconds"):
        parse_time(text)


def test_since_2030_shows_no_record_of_now(logdir, capsys):
    code, out, err = _cli(capsys, "tail", logdir, "t", "--since", "2030")
    assert code == 0 and out == "", (out, err)
    code, out, err = _cli(capsys, "tail", logdir, "t", "--since", "2020")
    assert code == 0 and len(out.splitlines()) == 5, (out, err)


def test_a_duration_ago_with_a_minus_needs_no_equals_sign(logdir, capsys):
    code, out, err = _cli(capsys, "tail", logdir, "t", "--since", "-1h")
    assert code == 0 and len(out.splitlines()) == 5, err
    code, out, err = _cli(capsys, "groups", logdir, "reset", "g", "--to-datetime", "-1h",
                          "--json")
    assert code == 0, err
    assert [(r["current"], r["new"]) for r in json.loads(out)["plan"]] == [(5, 0)]


def test_naive_datetime_max_east_of_utc_is_after_every_record(logdir, capsys, tokyo):
    assert parse_time(dt.datetime.max.isoformat()) > time.time() * 1000
    code, out, err = _cli(capsys, "groups", logdir, "reset", "g", "--to-datetime",
                          dt.datetime.max.isoformat())
    assert code == 0, err
    assert out.splitlines()[2].split() == ["t", "0", "5", "5"], out


def test_arguments_after_double_dash_are_not_rewritten(tmp_path, monkeypatch, capsys):
    from pylog.cli.args import join_time_values
    argv = ["tail", "--", "--since", "-1h"]
    assert join_time_values(argv) == argv
    # a log directory named "--since" and a topic "-1h": positionals after --
    monkeypatch.chdir(tmp_path)
    with pylog.open("--since", sync="never") as log:
        log.create_topic("-1h")
        log.producer().send("-1h", b"x")
    code, out, err = _cli(capsys, *argv)
    assert code == 0 and out.split("\t")[-1] == "x\n", (out, err)
