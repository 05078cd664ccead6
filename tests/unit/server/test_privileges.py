"""The privilege model (server.privileges) and the pid file (cli.control).

Pure where the code is pure (the plan, /proc parsing); the drop itself runs in a forked
child, since it cannot be undone in the test process. Tests that need root skip
without it.
"""

from __future__ import annotations

import os
import pwd
import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.cli.control import AlreadyRunning, PidFile, pid_path, running_pid
from ironpost.config import Settings, load_texts
from ironpost.server import privileges
from ironpost.server.privileges import Account, PrivilegeError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
NOBODY = pwd.getpwnam("nobody")
UNPRIVILEGED = Account("nobody", NOBODY.pw_uid, NOBODY.pw_gid)


def settings(extra: str = "") -> Settings:
    main = "myhostname = mail.example.test\n" + extra
    loaded = load_texts(main, "", main_file="main.cf", master_file="master.cf", config_dir=None)
    return loaded.settings


def no_account(_name: str) -> Account | None:
    return None


# -- the plan -----------------------------------------------------------------------------


def test_not_root_means_nothing_to_drop() -> None:
    plan = privileges.plan(settings("mail_owner = root\n"), euid=1000)
    assert plan.account is None and plan.notes == ()


def test_default_mail_owner_is_ironpost() -> None:
    asked: list[str] = []

    def lookup(name: str) -> Account | None:
        asked.append(name)
        return Account(name, 990, 990)

    plan = privileges.plan(settings(), euid=0, lookup=lookup)
    assert asked == ["ironpost"]
    assert plan.account == Account("ironpost", 990, 990)


def test_missing_account_names_the_command_to_run() -> None:
    with pytest.raises(PrivilegeError) as err:
        privileges.plan(settings("mail_owner = mailer\n"), euid=0, lookup=no_account)
    command = "useradd --system --no-create-home --shell /usr/sbin/nologin mailer"
    assert command in str(err.value)
    assert "create_mail_owner = yes" in str(err.value)


def test_missing_account_is_created_only_when_asked() -> None:
    created: list[str] = []

    def create(name: str) -> Account:
        created.append(name)
        return Account(name, 991, 991)

    plan = privileges.plan(
        settings("mail_owner = mailer\ncreate_mail_owner = yes\n"),
        euid=0,
        lookup=no_account,
        create=create,
    )
    assert created == ["mailer"]
    assert plan.account == Account("mailer", 991, 991)
    assert any("created the mail_owner account mailer" in n for n in plan.notes)


@pytest.mark.parametrize(
    "owner", [Account("root", 0, 0), Account("toor", 0, 5), Account("x", 5, 0)]
)
def test_root_owner_is_refused(owner: Account) -> None:
    with pytest.raises(PrivilegeError, match="refuses to serve as root"):
        privileges.plan(settings(f"mail_owner = {owner.name}\n"), euid=0, lookup=lambda _n: owner)


def test_root_owner_is_accepted_only_with_the_escape_hatch() -> None:
    plan = privileges.plan(
        settings("mail_owner = root\nironpost_allow_root = yes\n"),
        euid=0,
        lookup=lambda _n: Account("root", 0, 0),
    )
    assert plan.account is None
    assert any("serving as root" in n and "warning" in n for n in plan.notes)


def test_empty_mail_owner_is_refused() -> None:
    with pytest.raises(PrivilegeError, match="mail_owner is empty"):
        privileges.plan(settings("mail_owner =\n"), euid=0)


def test_create_account_runs_useradd_and_checks_the_result() -> None:
    ran: list[list[str]] = []
    with pytest.raises(PrivilegeError, match="still does not exist"):
        privileges.create_account("ironpost-test-nonexistent", run=ran.append)
    assert ran == [privileges.useradd_command("ironpost-test-nonexistent")]
    assert shlex.join(ran[0]).startswith("useradd --system --no-create-home")


# -- /proc ----------------------------------------------------------------------------------


@given(st.lists(st.integers(0, 2**32 - 2), min_size=4, max_size=4), st.integers(0, 2**31))
def test_status_ids_reads_uid_and_gid_lines(uids: list[int], gid: int) -> None:
    status = (
        "Name:\tironpost\nUmask:\t0022\n"
        f"Uid:\t{uids[0]}\t{uids[1]}\t{uids[2]}\t{uids[3]}\n"
        f"Gid:\t{gid}\t{gid}\t{gid}\t{gid}\nGroups:\t\n"
    )
    assert privileges.status_ids(status) == (uids, [gid] * 4)


def test_thread_ids_lists_this_process() -> None:
    found = privileges.thread_ids()
    assert found, "no /proc?"
    assert all(uids[1] == os.geteuid() for _task, uids, _gids in found)
    assert str(os.getpid()) in {task for task, _u, _g in found}


# -- ownership and the drop ---------------------------------------------------------------


@needs_root
def test_take_ownership_walks_the_tree_once_and_never_follows_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("root's")
    spool = tmp_path / "spool"
    (spool / "deep" / "deeper").mkdir(parents=True)
    (spool / "deep" / "deeper" / "file").write_text("x")
    (spool / "link").symlink_to(outside)
    changed = privileges.take_ownership([spool, tmp_path / "missing"], UNPRIVILEGED)
    assert spool in changed and spool / "deep" / "deeper" / "file" in changed
    for path in (spool, spool / "deep", spool / "deep" / "deeper" / "file"):
        assert (path.stat().st_uid, path.stat().st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert outside.stat().st_uid == 0  # the link was changed, not its target
    assert (spool / "link").lstat().st_uid == NOBODY.pw_uid
    assert privileges.take_ownership([spool], UNPRIVILEGED) == []


def _in_child(work: object) -> str:
    """Run ``work()`` in a forked child; its result (or the error) as text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        try:
            text = str(work())  # type: ignore[operator]
        except BaseException as exc:
            text = f"error: {exc}"
        os.write(write, text.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    return out


@needs_root
def test_drop_is_total_and_verified(tmp_path: Path) -> None:
    secret = tmp_path / "secret.key"
    secret.write_text("root only")
    secret.chmod(0o600)

    def work() -> str:
        privileges.drop_to(UNPRIVILEGED)
        try:
            secret.read_text()
            readable = "readable"
        except PermissionError:
            readable = "unreadable"
        ids = {tuple(u) + tuple(g) for _t, u, g in privileges.thread_ids()}
        return f"{os.getresuid()} {os.getresgid()} {os.getgroups()} {readable} {ids}"

    n, g = NOBODY.pw_uid, NOBODY.pw_gid
    assert _in_child(work) == (
        f"({n}, {n}, {n}) ({g}, {g}, {g}) [] unreadable { ({(n,) * 4 + (g,) * 4}) }"
    )


@needs_root
def test_drop_refuses_a_root_account() -> None:
    out = _in_child(lambda: privileges.drop_to(Account("toor", 0, 0)))
    assert out == "error: refusing to drop to a root account"


@needs_root
def test_verify_notices_a_drop_that_did_not_happen() -> None:
    out = _in_child(lambda: privileges.verify_dropped(UNPRIVILEGED))
    assert out.startswith("error: privilege drop to nobody failed: uids are (0, 0, 0)")
    assert "setuid(0) succeeded" in out


# -- the pid file ---------------------------------------------------------------------------


def test_pid_file_locks_and_is_released(tmp_path: Path) -> None:
    path = pid_path(tmp_path / "queue")
    assert path == tmp_path / "queue" / "pid" / "master.pid"
    assert running_pid(path) is None
    first = PidFile(path)
    first.acquire()
    try:
        assert path.read_text() == f"{os.getpid()}\n"
        assert running_pid(path) == os.getpid()
        with pytest.raises(AlreadyRunning) as err:
            PidFile(path).acquire()
        assert err.value.pid == os.getpid()
    finally:
        first.release()
    assert not path.exists()
    assert running_pid(path) is None


def test_a_stale_pid_file_is_not_a_running_daemon(tmp_path: Path) -> None:
    path = pid_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("4242\n")  # left by a kill -9: nobody holds its lock
    assert running_pid(path) is None
    fresh = PidFile(path)
    fresh.acquire()
    try:
        assert path.read_text() == f"{os.getpid()}\n"
    finally:
        fresh.release()
