"""``ironpost_workers = 2`` on a real ironpost: two SMTP worker processes sharing the
listener through SO_REUSEPORT, and the master (queue authority, deliveries) serving none.

- 200 messages over many connections are each delivered exactly once, both workers
  served connections and the master none (the pids in the maillog's ``smtpd[pid]``
  tags);
- SIGTERM stops every process (nothing of it is left in /proc);
- kill -9 of the worker: the master logs it, Postfix-style, restarts it, and the new
  worker serves; kill -9 of the master: the worker exits;
- started as root, the worker serves as mail_owner too, and a worker restarted after
  the master's drop (so without root) still serves.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mta_harness import HOST, Mta, MtaFactory, _env, write_config

WORKERS = "ironpost_workers = 2\n"
STARTED = re.compile(r"master\[(\d+)\]: worker \d+ started: pid (\d+)")


def _pids(mta: Mta, timeout: float = 10.0) -> tuple[int, list[int]]:
    """(master pid, worker pids in start order) from the maillog."""
    assert mta.log_has("daemon started", "worker started", timeout=timeout), mta.maillog
    assert _wait(lambda: len(STARTED.findall(mta.maillog)) >= 2, timeout=timeout)
    found = STARTED.findall(mta.maillog)
    return int(found[0][0]), [int(w) for _, w in found]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _workers_of(master: int) -> list[int]:
    """Every live process started as a worker of ``master`` (from /proc/*/cmdline)."""
    marker = f"--worker-of\0{master}\0".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes() and _alive(int(entry.name)):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _wait(condition, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def _send(port: int, subjects: list[str], rcpt: str = "alice@example.test") -> None:
    """One connection, several transactions (RSET between them, as smtplib does)."""
    with smtplib.SMTP(HOST, port, timeout=30) as client:
        for subject in subjects:
            body = f"From: x@sender.test\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nbody\r\n"
            client.sendmail("x@sender.test", [rcpt], body)


def _subjects(messages: list[bytes]) -> list[str]:
    out = []
    for message in messages:
        found = re.search(rb"^Subject: (\S+)", message, re.MULTILINE)
        assert found is not None
        out.append(found.group(1).decode())
    return out


def _served_by(mta: Mta, pid: int) -> bool:
    return f"smtpd[{pid}]: connect from" in mta.maillog


def test_two_processes_deliver_every_message_exactly_once(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start(WORKERS)
    master, workers = _pids(mta)
    assert len(workers) == 2
    assert sorted(_workers_of(master)) == sorted(workers)

    # 80 connections: 60 with one message, 20 with seven (new-connection and reuse).
    batches = [[f"m{i}"] for i in range(60)]
    batches += [[f"r{i}-{j}" for j in range(7)] for i in range(20)]
    wanted = sorted(s for batch in batches for s in batch)
    assert len(wanted) == 200
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda batch: _send(mta.port, batch), batches))

    messages = mta.wait_for_messages("alice", 200, timeout=60)
    time.sleep(0.5)  # a duplicate would show up now
    assert sorted(_subjects(mta.messages("alice"))) == wanted
    assert len(messages) == 200
    # The kernel spread the connections over both workers; the master served none.
    assert mta.log_has(*(f"smtpd[{pid}]: connect from" for pid in workers))
    assert not _served_by(mta, master)

    assert mta.process is not None
    mta.process.send_signal(signal.SIGTERM)
    assert mta.process.wait(timeout=20) == 0
    assert _wait(lambda: not any(_alive(pid) for pid in workers))
    assert _workers_of(master) == []
    log = mta.maillog
    for pid in workers:
        assert f"smtpd[{pid}]: terminating on signal 15" in log
    assert f"master[{master}]: daemon stopped" in log
    assert "warning: process" not in log  # a stop is not a crash


def test_a_killed_worker_is_restarted_and_serves(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start(WORKERS)
    master, [worker, other] = _pids(mta)
    os.kill(worker, signal.SIGKILL)
    assert mta.log_has(
        f"master[{master}]: warning: process ironpost/smtpd pid {worker} killed by signal 9",
        "restarting worker 1 in",
        timeout=10,
    )
    assert _wait(lambda: len(_pids(mta)[1]) == 3, timeout=15)
    new = _pids(mta)[1][2]
    assert new not in (worker, other)
    assert mta.log_has(f"smtpd[{new}]: worker started -- master pid {master}", timeout=15)
    assert sorted(_workers_of(master)) == sorted([new, other])

    # Service goes on, and the new worker takes its share of the connections.
    sent = _send_until_served(mta, [new])
    assert sorted(_subjects(mta.wait_for_messages("alice", len(sent), timeout=30))) == sent


def test_the_worker_exits_when_the_master_is_killed(mta_factory: type[MtaFactory]) -> None:
    mta = mta_factory.start(WORKERS)
    master, workers = _pids(mta)
    # A worker logs "started" once its signal handlers are in place; killed before that
    # (a loaded machine), SIGTERM's default action ends it without a word.
    assert mta.log_has(*(f"smtpd[{pid}]: worker started" for pid in workers), timeout=15)
    mta.kill9()
    # PDEATHSIG: SIGTERM; each drains (nothing open) and exits.
    assert _wait(lambda: not any(_alive(pid) for pid in workers), timeout=15)
    assert _workers_of(master) == []
    assert mta.log_has(*(f"smtpd[{pid}]: terminating on signal 15" for pid in workers))


def test_one_process_is_the_default(mta: Mta) -> None:
    assert mta.log_has("daemon started")
    assert "worker" not in mta.maillog
    assert mta.process is not None
    assert _workers_of(mta.process.pid) == []
    shown = mta.cli("postconf", "-d", "ironpost_workers")
    assert shown.stdout.strip() == "ironpost_workers = 1"


# -- as root, with a real mail_owner -------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory mail_owner can reach (pytest's tmp_path sits below a 0700 dir)."""
    directory = Path(tempfile.mkdtemp(prefix="ironpost-workers-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _uids(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return line.split()[1:]
    raise AssertionError("no Uid line")


def _as_nobody(directory: Path) -> Mta:
    port = write_config(directory, WORKERS)
    main = directory / "main.cf"
    text = main.read_text()
    main.write_text(text.replace("mail_owner = root\nironpost_allow_root = yes\n", ""))
    main.write_text(main.read_text() + "mail_owner = nobody\n")
    mta = Mta(directory, port)
    mta.start()
    return mta


def _nobody_can_run_python() -> bool:
    """A worker restarted after the drop is exec'd as mail_owner: the interpreter must be
    reachable by it (not so for a pyenv under /root, as on some test machines)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import ironpost"], user="nobody", env=_env(), timeout=30
        )
    except OSError:
        return False
    return done.returncode == 0


@needs_root
def test_started_as_root_every_process_serves_as_mail_owner(world_dir: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    mta = _as_nobody(world_dir)
    try:
        master, workers = _pids(mta)
        assert _uids(master) == [str(nobody.pw_uid)] * 4
        for pid in workers:
            assert _wait(lambda pid=pid: _uids(pid) == [str(nobody.pw_uid)] * 4)
            assert mta.log_has(f"smtpd[{pid}]: running as nobody")
        sent = _send_until_served(mta, workers)
        assert sorted(_subjects(mta.wait_for_messages("alice", len(sent), timeout=30))) == sent
    finally:
        mta.stop()
    assert _workers_of(master) == []


@needs_root
@pytest.mark.skipif(
    os.geteuid() == 0 and not _nobody_can_run_python(),
    reason="this interpreter is not executable by nobody",
)
def test_a_worker_restarted_after_the_drop_serves(world_dir: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    mta = _as_nobody(world_dir)
    try:
        master, [worker, _other] = _pids(mta)
        os.kill(worker, signal.SIGKILL)  # restarted by a master that is no longer root
        assert _wait(lambda: len(_pids(mta)[1]) == 3, timeout=15), mta.maillog
        new = _pids(mta)[1][2]
        assert mta.log_has(f"smtpd[{new}]: worker started", timeout=15)
        assert _uids(new) == [str(nobody.pw_uid)] * 4
        sent = _send_until_served(mta, [new])
        assert sorted(_subjects(mta.wait_for_messages("alice", len(sent), timeout=30))) == sent
    finally:
        mta.stop()
    assert _workers_of(master) == []


def _send_until_served(mta: Mta, pids: list[int], most: int = 60) -> list[str]:
    """Connect (one message each) until every one of ``pids`` has served a connection."""
    sent: list[str] = []
    for i in range(most):
        _send(mta.port, [f"s{i:03d}"])
        sent.append(f"s{i:03d}")
        if i >= 3 and all(_served_by(mta, pid) for pid in pids):
            break
    assert mta.log_has(*(f"smtpd[{pid}]: connect from" for pid in pids), timeout=3)
    return sent


def test_workers_on_a_postgresql_queue(mta_factory: type[MtaFactory], pg_url: str) -> None:
    # Each worker commits to the shared database itself; the master alone claims and
    # delivers; every process is its own anvil node of the cluster.
    mta = mta_factory.start(
        WORKERS + f"queue_engine = postgresql\nqueue_database_url = {pg_url}\n"
        "queue_node_name = mx1\n"
    )
    _master, workers = _pids(mta)
    sent = _send_until_served(mta, workers)
    delivered = mta.wait_for_messages("alice", len(sent), timeout=30)
    assert sorted(_subjects(delivered)) == sorted(sent)
    assert mta.log_has("queue: postgresql, shared by a cluster; this node is mx1")
    listing = mta.cli("queue", "nodes")
    assert listing.returncode == 0 and "mx1" in listing.stdout, listing.stderr
