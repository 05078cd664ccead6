"""Finding and erasing one person's log lines, in clear and pseudonymised logs."""

from __future__ import annotations

import io
import stat
from pathlib import Path

from ironpost.maillog import MailLog
from ironpost.maillog.keys import LogKey
from ironpost.maillog.privacy import Pseudonymizer
from ironpost.maillog.search import erase, find

OLD, NEW = LogKey(1.0, bytes(range(32))), LogKey(2.0, bytes(range(1, 33)))

SESSION = [
    "connect from client.example[192.0.2.7]",
    "Q1AAAAA: client=client.example[192.0.2.7]",
    "Q1AAAAA: message-id=<123@client.example>",
    "Q1AAAAA: from=<Alice@Example.test>, size=900, nrcpt=2 (queue active)",
    "Q1AAAAA: to=<bob@example.test>, relay=maildir, delay=0, delays=0/0/0/0, dsn=2.0.0, "
    "status=sent (delivered to maildir)",
    "Q1AAAAA: to=<carol@example.test>, relay=maildir, delay=0, delays=0/0/0/0, dsn=2.0.0, "
    "status=sent (delivered to maildir)",
    "Q1AAAAA: removed",
    "Q2BBBBB: client=other.example[192.0.2.8]",
    "Q2BBBBB: from=<malice@example.test>, size=900, nrcpt=1 (queue active)",
    "Q2BBBBB: to=<alice@example.test.evil>, relay=maildir, delay=0, delays=0/0/0/0, "
    "dsn=2.0.0, status=sent (delivered to maildir)",
    "Q2BBBBB: removed",
    "NOQUEUE: reject: RCPT from x[192.0.2.9]: 550 5.1.1 <alice@example.test>: User unknown; "
    "from=<spam@spam.test> to=<alice@example.test> proto=ESMTP helo=<x>",
]
ALICE = {0: False, 1: True, 2: True, 3: True, 4: False, 5: False, 6: True}
ALICE |= {7: False, 8: False, 9: False, 10: False, 11: True}


def _write(path: Path, key: LogKey | None, lines: list[str] = SESSION) -> None:
    out = io.StringIO()
    scrub = Pseudonymizer(key.secret) if key is not None else None
    log = MailLog(out, hostname="mx", clock=lambda: 1_772_712_000.0, scrub=scrub)
    for text in lines:
        log.emit("smtpd", text)
    path.write_text(out.getvalue())


def _expected(path: Path) -> list[int]:
    return [n + 1 for n, about in ALICE.items() if about]


def test_find_in_clear_whole_address_any_case(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    _write(path, None)
    found = find([path], "ALICE@example.test", [])
    assert [m.number for m in found] == _expected(path)
    # malice@ and alice@example.test.evil are other people
    assert not any("malice" in m.line or ".evil" in m.line for m in found)


def test_find_through_every_kept_key(tmp_path: Path) -> None:
    old, new = tmp_path / "maillog.20260304", tmp_path / "maillog"
    _write(old, OLD)
    _write(new, NEW)
    assert "alice" not in old.read_text().lower()
    found = find([old, new], "alice@example.test", [NEW, OLD])
    assert {m.path for m in found} == {old, new}
    assert [m.number for m in found if m.path == new] == _expected(new)
    assert find([old], "alice@example.test", [NEW]) == []  # the retired key is needed


def test_erase_rewrites_atomically_keeping_mode_and_others(tmp_path: Path) -> None:
    path = tmp_path / "maillog"
    _write(path, NEW)
    path.chmod(0o640)
    before = path.read_text().splitlines()
    assert erase([path], "alice@example.test", [NEW]) == {path: sum(ALICE.values())}
    after = path.read_text().splitlines()
    assert after == [line for n, line in enumerate(before) if not ALICE[n]]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert find([path], "alice@example.test", [NEW]) == []
    assert erase([path], "alice@example.test", [NEW]) == {}
    assert not list(tmp_path.glob(".maillog.erase.*"))
