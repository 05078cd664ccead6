"""Retention: daily file rotation and deletion, file modes, key rotation; fake clocks."""

from __future__ import annotations

import io
import json
import os
import stat
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from ironpost.config import load
from ironpost.maillog import MailLog
from ironpost.maillog.keys import (
    DAY,
    KEY_FILE,
    KeyFileError,
    current_keys,
    load_keys,
    parse_keys,
)
from ironpost.maillog.search import erase
from ironpost.maillog.sinks import FileSink, StreamSink, log_files, rotated_files

NOON = time.mktime((2026, 3, 5, 12, 0, 0, 0, 0, -1))  # local noon: days are unambiguous


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _loose_umask():  # type: ignore[no-untyped-def]
    old = os.umask(0)  # the modes must not depend on the umask's help
    yield
    os.umask(old)


def test_file_rotates_daily_and_old_copies_go(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    sink = FileSink(path, retention_days=2, now=NOON)
    sink.write("day one\n")
    sink.flush()
    assert _mode(path) == 0o600
    for n in range(1, 5):
        sink.maintain(NOON + n * DAY)
        sink.write(f"day {n + 1}\n")
        sink.flush()
    days = [d for d, _ in rotated_files(path)]
    today = date(2026, 3, 9)
    assert days == [today - timedelta(days=2), today - timedelta(days=1)]
    assert path.read_text() == "day 5\n"
    assert [p.read_text() for _, p in rotated_files(path)] == ["day 3\n", "day 4\n"]
    assert all(_mode(p) == 0o600 for p in log_files(path))
    sink.close()


def test_zero_retention_never_rotates(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    sink = FileSink(path, retention_days=0, now=NOON)
    sink.write("a\n")
    sink.maintain(NOON + 10 * DAY)
    sink.write("b\n")
    sink.close()
    assert path.read_text() == "a\nb\n" and rotated_files(path) == []


def test_a_file_left_by_yesterdays_run_is_rotated_under_its_day(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    path.write_text("old\n")
    os.utime(path, (NOON - DAY, NOON - DAY))
    path.chmod(0o644)
    FileSink(path, mode=0o640, retention_days=7, now=NOON).close()
    [(day, copy)] = rotated_files(path)
    assert day == date(2026, 3, 4) and copy.read_text() == "old\n"
    assert _mode(path) == 0o640


def test_sink_follows_a_file_replaced_by_erase(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    sink = FileSink(path, now=NOON)
    sink.write("Mar  5 12:00:00 mx ironpost/qmgr[1]: Q1: from=<a@x.test>, size=1\n")
    sink.write("Mar  5 12:00:00 mx ironpost/qmgr[1]: Q2: from=<b@x.test>, size=1\n")
    sink.flush()
    assert erase([path], "a@x.test", []) == {path: 1}
    sink.write("Mar  5 12:00:01 mx ironpost/qmgr[1]: Q3: removed\n")
    sink.close()
    assert [line.split(": ", 1)[1] for line in path.read_text().splitlines()] == [
        "Q2: from=<b@x.test>, size=1",
        "Q3: removed",
    ]


def test_keys_are_made_rotated_and_pruned(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    first = current_keys(path, now=NOON, rotation=30 * DAY, retention_days=10)
    assert len(first) == 1 and _mode(path) == 0o600
    assert current_keys(path, now=NOON + DAY, rotation=30 * DAY, retention_days=10) == first
    second = current_keys(path, now=NOON + 30 * DAY, rotation=30 * DAY, retention_days=10)
    assert len(second) == 2 and second[1] == first[0] and second[0] != first[0]
    # The old key signed lines until the new one came; those lines live 10 days more.
    assert len(load_keys(path)) == 2
    kept = current_keys(path, now=NOON + 39 * DAY, rotation=30 * DAY, retention_days=10)
    assert len(kept) == 2
    pruned = current_keys(path, now=NOON + 41 * DAY, rotation=30 * DAY, retention_days=10)
    assert pruned == second[:1]
    assert "LogKey(created=" in repr(pruned[0]) and pruned[0].secret.hex() not in repr(pruned)


def test_a_loosened_key_file_is_tightened_and_bad_files_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    current_keys(path, now=NOON, rotation=DAY, retention_days=1)
    path.chmod(0o644)
    current_keys(path, now=NOON, rotation=DAY, retention_days=1)
    assert _mode(path) == 0o600
    with pytest.raises(KeyFileError):
        parse_keys("12 nothex\n")
    with pytest.raises(KeyFileError):
        parse_keys("12 abcd\n")  # too short


def _settings(tmp_path: Path, extra: str) -> object:
    etc = tmp_path / "etc"
    etc.mkdir()
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (etc / "main.cf").write_text(
        f"myhostname = mx.example.test\ndata_directory = {data}\n"
        f"queue_directory = {data}/queue\nmaillog_file = {data}/maillog\n{extra}"
    )
    return load(etc).settings


def test_from_settings_pseudonymizes_by_default_with_a_kept_key(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "")
    log = MailLog.from_settings(settings, clock=lambda: NOON)  # type: ignore[arg-type]
    log.emit("qmgr", "Q1: from=<alice@example.test>, size=1, nrcpt=1 (queue active)")
    log.close()
    text = (tmp_path / "data" / "maillog").read_text()
    assert "alice" not in text and "from=<u-" in text
    assert _mode(tmp_path / "data" / "maillog") == 0o600
    assert _mode(tmp_path / "data" / KEY_FILE) == 0o600


def test_from_settings_json_redacted_0640(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, "maillog_format = json\nmaillog_privacy = redact\nmaillog_file_mode = 0640\n"
    )
    log = MailLog.from_settings(settings, clock=lambda: NOON)  # type: ignore[arg-type]
    log.emit("smtpd", "Q1: client=host.example[192.0.2.7]")
    log.close()
    path = tmp_path / "data" / "maillog"
    record = json.loads(path.read_text())
    assert record["client"] == "*.example[192.0.2.x]" and record["host"] == "mx"
    assert _mode(path) == 0o640
    assert not (tmp_path / "data" / KEY_FILE).exists()


def test_unreadable_key_fails_closed_to_redaction(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "")
    (tmp_path / "data" / KEY_FILE).write_text("not a key file\n")
    log = MailLog.from_settings(settings, clock=lambda: NOON)  # type: ignore[arg-type]
    log.emit("qmgr", "Q1: from=<alice@example.test>, size=1")
    log.close()
    text = (tmp_path / "data" / "maillog").read_text()
    assert "redacting instead" in text and "from=<*@example.test>" in text


def test_maillog_rotates_its_key_while_running(tmp_path: Path) -> None:
    now = [NOON]
    out = io.StringIO()
    settings = _settings(tmp_path, "maillog_privacy_key_rotation = 1d\n")
    log = MailLog.from_settings(settings, clock=lambda: now[0])  # type: ignore[arg-type]
    log._sinks.append(StreamSink(out))
    log.emit("qmgr", "Q1: from=<alice@example.test>, size=1")
    now[0] += 2 * DAY
    log.emit("qmgr", "Q2: from=<alice@example.test>, size=1")
    log.flush()
    first, second = (line.split("from=<")[1] for line in out.getvalue().splitlines())
    assert first != second  # a new key, new tokens
    assert len(load_keys(tmp_path / "data" / KEY_FILE)) == 2
