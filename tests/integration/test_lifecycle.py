"""The process lifecycle of a real ironpost: privilege drop, reload, stop, banners.

- started as root with an unprivileged mail_owner, the process's ids (from
  /proc/<pid>/status) are that account's, and mail still flows;
- ``ironpost reload`` (SIGHUP): new sessions get the new configuration, a session open
  across the reload finishes on the old one, a bad configuration is refused;
- ``ironpost stop`` (SIGTERM): idle sessions get 421 at once, a message mid-DATA gets
  its 250 and is delivered; one that stalls past shutdown_timeout gets 421 and is not
  queued (the client still holds it: nothing is lost).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mta_harness import HOST, IRONPOST, Mta, MtaFactory, RawClient, _env, write_config

HEADERS = b"From: x@sender.test\r\nTo: alice@example.test\r\nSubject: lifecycle\r\n\r\n"


def _add_carol(mta: Mta) -> None:
    main = mta.dir / "main.cf"
    text = main.read_text()
    old = "bob@example.test=example.test/bob/,"
    assert old in text
    main.write_text(text.replace(old, old + " carol@example.test=example.test/carol/,"))


def _transaction(client: RawClient, rcpt: bytes) -> bytes:
    assert client.cmd(b"MAIL FROM:<x@sender.test>").startswith(b"250")
    return client.cmd(b"RCPT TO:<" + rcpt + b">")


def _status(pid: int) -> dict[str, list[str]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.split() for k, _, v in (line.partition(":") for line in lines)}


def _stop_in_background(
    mta: Mta,
) -> tuple[threading.Thread, list[subprocess.CompletedProcess[str]]]:
    done: list[subprocess.CompletedProcess[str]] = []
    thread = threading.Thread(target=lambda: done.append(mta.cli("stop")))
    thread.start()
    assert mta.log_has("terminating on signal 15", timeout=15)
    return thread, done


def _finish(mta: Mta) -> None:
    """Wait for the process the background stop ended; the harness need not stop it."""
    assert mta.process is not None
    mta.process.wait(timeout=15)
    mta.process = None


# -- banners, status -------------------------------------------------------------------------


def test_banners_and_status(mta: Mta) -> None:
    assert mta.log_has(
        f"daemon started -- version 0.1.0, configuration {mta.dir}",
        f"listening on {HOST}:{mta.port} (smtp)",
    )
    status = mta.cli("status")
    assert status.returncode == 0, status.stderr
    assert mta.process is not None and f"PID: {mta.process.pid}" in status.stderr
    stop = mta.cli("stop")
    assert stop.returncode == 0, stop.stderr
    _finish(mta)
    assert mta.log_has("terminating on signal 15", "daemon stopped")
    assert not (mta.data / "queue" / "pid" / "master.pid").exists()
    gone = mta.cli("status")
    assert gone.returncode == 3 and "not running" in gone.stderr


# -- reload ------------------------------------------------------------------------------------


def test_reload_serves_new_sessions_the_new_config_and_lets_old_ones_finish(mta: Mta) -> None:
    before = RawClient(mta.port)
    assert before.cmd(b"EHLO old.test").startswith(b"250")
    _add_carol(mta)
    reload = mta.cli("reload")
    assert reload.returncode == 0, reload.stderr
    assert mta.log_has(f"reload -- version 0.1.0, configuration {mta.dir}")

    # The session open across the reload finishes on the configuration it began with.
    assert _transaction(before, b"carol@example.test").startswith(b"550")
    assert before.cmd(b"RCPT TO:<alice@example.test>").startswith(b"250")
    assert before.cmd(b"DATA").startswith(b"354")
    assert before.cmd(HEADERS + b"old session\r\n.").startswith(b"250")
    before.close()

    with smtplib.SMTP(HOST, mta.port, timeout=10) as s:
        s.sendmail("x@sender.test", ["carol@example.test"], HEADERS + b"new session\r\n")
    assert b"new session" in mta.wait_for_messages("carol", 1)[0]
    assert b"old session" in mta.wait_for_messages("alice", 1)[0]


def test_a_bad_config_is_refused_and_the_old_one_keeps_serving(mta: Mta) -> None:
    main = mta.dir / "main.cf"
    good = main.read_text()
    _add_carol(mta)
    main.write_text(main.read_text() + "message_size_limit = lots\n")

    # The CLI checks first and does not signal.
    refused = mta.cli("reload")
    assert refused.returncode == 1
    assert "message_size_limit = lots: not a number" in refused.stderr

    # SIGHUP with the same file: the daemon refuses it too, and keeps serving.
    assert mta.process is not None
    os.kill(mta.process.pid, signal.SIGHUP)
    assert mta.log_has("not a number", "reload refused")
    assert "reload -- version" not in mta.maillog
    client = RawClient(mta.port)
    assert client.cmd(b"EHLO after.test").startswith(b"250")
    assert _transaction(client, b"carol@example.test").startswith(b"550")  # old maps
    client.close()

    main.write_text(good)
    os.kill(mta.process.pid, signal.SIGHUP)
    assert mta.log_has("reload -- version")


# -- stop -------------------------------------------------------------------------------------


def test_stop_lets_a_transaction_in_flight_finish_and_closes_idle_sessions(mta: Mta) -> None:
    busy = RawClient(mta.port)
    assert busy.cmd(b"EHLO busy.test").startswith(b"250")
    assert _transaction(busy, b"alice@example.test").startswith(b"250")
    assert busy.cmd(b"DATA").startswith(b"354")
    busy.send(HEADERS + b"first half\r\n")
    idle = RawClient(mta.port)
    assert idle.cmd(b"EHLO idle.test").startswith(b"250")

    thread, done = _stop_in_background(mta)
    assert idle.reply().startswith(b"421 4.3.2")
    assert idle.closed()
    with pytest.raises(OSError):
        socket.create_connection((HOST, mta.port), timeout=2).close()

    busy.send(b"second half\r\n.\r\n")
    assert busy.reply().startswith(b"250")
    assert busy.reply().startswith(b"421")  # the transaction is over: now it goes too
    thread.join(30)
    assert done and done[0].returncode == 0, done
    _finish(mta)
    assert mta.log_has("daemon stopped")

    mta.start()  # whatever was not delivered before the stop is delivered now
    message = mta.wait_for_messages("alice", 1)[0]
    assert b"first half\nsecond half" in message


def test_stop_cuts_a_stalled_transaction_without_acknowledging_it(
    mta_factory: type[MtaFactory],
) -> None:
    mta = mta_factory.start("shutdown_timeout = 1s\n")
    stalled = RawClient(mta.port)
    assert stalled.cmd(b"EHLO slow.test").startswith(b"250")
    assert _transaction(stalled, b"alice@example.test").startswith(b"250")
    assert stalled.cmd(b"DATA").startswith(b"354")
    stalled.send(HEADERS + b"never finished\r\n")
    started = time.monotonic()
    thread, done = _stop_in_background(mta)
    assert stalled.reply().startswith(b"421 4.3.2")
    assert 0.5 < time.monotonic() - started < 10
    thread.join(30)
    assert done and done[0].returncode == 0
    _finish(mta)
    mta.start()
    listing = mta.cli("queue", "list")
    assert "alice@example.test" not in listing.stdout
    time.sleep(0.5)
    assert mta.messages("alice") == []


# -- privileges ----------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the drop needs root")


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory mail_owner can reach (pytest's tmp_path sits below a 0700 dir)."""
    directory = Path(tempfile.mkdtemp(prefix="ironpost-lifecycle-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _as_owner(directory: Path, owner: str) -> Mta:
    port = write_config(directory)
    main = directory / "main.cf"
    text = main.read_text()
    assert "mail_owner = root\nironpost_allow_root = yes\n" in text
    main.write_text(text.replace("mail_owner = root\nironpost_allow_root = yes\n", owner))
    return Mta(directory, port)


@needs_root
def test_started_as_root_it_serves_as_mail_owner(world_dir: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    mta = _as_owner(world_dir, "mail_owner = nobody\n")
    mta.start()
    try:
        assert mta.process is not None
        status = _status(mta.process.pid)
        assert status["Uid"] == [str(nobody.pw_uid)] * 4
        assert status["Gid"] == [str(nobody.pw_gid)] * 4
        assert status["Groups"] == []
        assert mta.log_has(f"running as nobody (uid {nobody.pw_uid}")

        with smtplib.SMTP(HOST, mta.port, timeout=10) as s:
            s.sendmail("x@sender.test", ["alice@example.test"], HEADERS + b"dropped\r\n")
        assert b"dropped" in mta.wait_for_messages("alice", 1)[0]
        delivered = next((mta.maildir("alice") / "new").iterdir())
        assert delivered.stat().st_uid == nobody.pw_uid
        assert (mta.data / "queue").stat().st_uid == nobody.pw_uid

        # Reload as nobody: the configuration is re-read without root.
        _add_carol(mta)
        os.kill(mta.process.pid, signal.SIGHUP)
        assert mta.log_has("reload -- version")
        with smtplib.SMTP(HOST, mta.port, timeout=10) as s:
            s.sendmail("x@sender.test", ["carol@example.test"], HEADERS + b"after\r\n")
        mta.wait_for_messages("carol", 1)
    finally:
        mta.stop()
    assert mta.log_has("daemon stopped")


def _run_fails(directory: Path) -> str:
    result = subprocess.run(
        [*IRONPOST, "run", "-c", str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert result.returncode == 1
    return result.stderr


@needs_root
def test_it_refuses_to_serve_as_root(world_dir: Path) -> None:
    _as_owner(world_dir, "mail_owner = root\n")
    assert "refuses to serve as root" in _run_fails(world_dir)


@needs_root
def test_a_missing_mail_owner_names_the_command_that_creates_it(world_dir: Path) -> None:
    _as_owner(world_dir, "mail_owner = ironpost-no-such-user\n")
    err = _run_fails(world_dir)
    assert (
        "useradd --system --no-create-home --shell /usr/sbin/nologin ironpost-no-such-user" in err
    )


def test_nothing_created_is_world_readable(mta_factory) -> None:  # type: ignore[no-untyped-def]
    import smtplib
    import stat

    from mta_harness import HOST

    mta = mta_factory.start()
    with smtplib.SMTP(HOST, mta.port, timeout=10) as c:
        c.sendmail("carol@sender.test", ["alice@example.test"], b"Subject: x\r\n\r\nhi\r\n")
    mta.wait_for_messages("alice", 1)
    # Every directory and file under the data directory made by the server: the Maildir
    # tree (domain directory included), the queue, keys and the log. (The wake-up socket
    # public/qmgr is world-writable on purpose, as Postfix's public/pickup: never readable.)
    made = [p for p in mta.data.rglob("*") if not p.is_symlink()]
    assert made
    for path in made:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o004 == 0, f"{path} is {oct(mode)}"
        if not stat.S_ISSOCK(path.lstat().st_mode):
            assert mode & 0o007 == 0, f"{path} is {oct(mode)}"
