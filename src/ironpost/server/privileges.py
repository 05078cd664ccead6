"""Who the daemon runs as: the account to drop to, the drop itself, and its checks.

Owns the privilege model. Started as root, ironpost opens everything that needs root
(ports below 1024, the queue, the log, TLS and DKIM private keys), hands the
directories it writes to ``mail_owner``, and then drops to that account for good,
before the first byte is read from the network. Invariants:

- a daemon started as root never serves as root, unless the configuration says
  ``mail_owner = root`` *and* ``ironpost_allow_root = yes`` (test harnesses only);
- the drop is total (supplementary groups, gid, then uid; real, effective and saved
  ids) and is verified afterwards, in every thread, not assumed;
- a missing account is created only when ``create_mail_owner = yes``; otherwise the
  error names the exact command to run.

Started as any other user there is nothing to drop: the daemon runs as that user.
"""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class PrivilegeError(Exception):
    """The daemon cannot run with the privileges the configuration asks for."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int


class _Settings(Protocol):
    def text(self, name: str) -> str: ...
    def boolean(self, name: str) -> bool: ...


def useradd_command(name: str) -> list[str]:
    """The command that creates ``name`` as a system account without a login."""
    return ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]


def lookup_account(name: str) -> Account | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def create_account(name: str, run: Callable[[list[str]], object] | None = None) -> Account:
    """Create ``name`` with useradd; the account, or PrivilegeError."""
    command = useradd_command(name)
    try:
        if run is None:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
        else:
            run(command)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        raise PrivilegeError(f"cannot create mail_owner {name!r}: {detail}".strip()) from None
    account = lookup_account(name)
    if account is None:
        raise PrivilegeError(f"{shlex.join(command)} ran but {name!r} still does not exist")
    return account


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do at start: drop to ``account``, or (None) run as we are."""

    account: Account | None
    #: Log lines for the start (e.g. the account was created, root was allowed).
    notes: tuple[str, ...] = ()


def plan(
    settings: _Settings,
    *,
    euid: int | None = None,
    lookup: Callable[[str], Account | None] = lookup_account,
    create: Callable[[str], Account] = create_account,
) -> Plan:
    """Decide, before anything is opened, whom the daemon will run as.

    Raises PrivilegeError with the message an administrator needs."""
    if (os.geteuid() if euid is None else euid) != 0:
        return Plan(None)
    name = settings.text("mail_owner").strip()
    if not name:
        raise PrivilegeError("mail_owner is empty: name the unprivileged account to run as")
    account = lookup(name)
    notes: list[str] = []
    if account is None:
        if not settings.boolean("create_mail_owner"):
            raise PrivilegeError(
                f"mail_owner {name!r} does not exist; create it with:"
                f" {shlex.join(useradd_command(name))}"
                f" (or set create_mail_owner = yes to let ironpost run that)"
            )
        account = create(name)
        notes.append(f"created the mail_owner account {name} (uid {account.uid})")
    if account.uid == 0 or account.gid == 0:
        if not settings.boolean("ironpost_allow_root"):
            raise PrivilegeError(
                f"mail_owner {name!r} has uid {account.uid}, gid {account.gid}: ironpost"
                " refuses to serve as root; set mail_owner to an unprivileged account"
            )
        notes.append(
            "warning: serving as root (mail_owner = root, ironpost_allow_root = yes):"
            " for test harnesses only, never in production"
        )
        return Plan(None, tuple(notes))
    return Plan(account, tuple(notes))


def take_ownership(paths: Iterable[Path], account: Account) -> list[Path]:
    """Give ``paths`` (directories, or files such as the SASL passwd file) to ``account``.

    A directory already owned by the account is taken to be in order (a Maildir tree
    can be large: it is walked only the first time, when it still belongs to root).
    Returns what was changed. Symbolic links are never followed: a link planted in a
    spool must not hand some other file to the mail owner."""
    changed: list[Path] = []
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if st.st_uid == account.uid and st.st_gid == account.gid:
            continue
        _chown(path, account, changed)
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                for name in (*dirs, *files):
                    _chown(Path(root) / name, account, changed)
    return changed


def _chown(path: Path, account: Account, changed: list[Path]) -> None:
    st = path.lstat()
    if st.st_uid != account.uid or st.st_gid != account.gid:
        os.chown(path, account.uid, account.gid, follow_symlinks=False)
        changed.append(path)


def drop_to(account: Account) -> None:
    """Become ``account`` for good: groups first, then gid, then uid (after setuid the
    process could no longer change its groups). Verified before returning."""
    if account.uid == 0 or account.gid == 0:
        raise PrivilegeError("refusing to drop to a root account")
    try:
        os.setgroups([])
        os.setresgid(account.gid, account.gid, account.gid)
        os.setresuid(account.uid, account.uid, account.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot drop privileges to {account.name}: {exc}") from None
    verify_dropped(account)


def verify_dropped(account: Account) -> None:
    """Check that the drop stuck: every id of every thread is the account's, there are
    no supplementary groups, and root cannot be regained."""
    problems: list[str] = []
    if os.getresuid() != (account.uid,) * 3:
        problems.append(f"uids are {os.getresuid()}")
    if os.getresgid() != (account.gid,) * 3:
        problems.append(f"gids are {os.getresgid()}")
    if os.getgroups() not in ([], [account.gid]):
        problems.append(f"supplementary groups {os.getgroups()}")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        problems.append("setuid(0) succeeded")
    for task, uids, gids in thread_ids():
        if set(uids) != {account.uid} or set(gids) != {account.gid}:
            problems.append(f"thread {task} still has uids {uids} gids {gids}")
    if problems:
        raise PrivilegeError(f"privilege drop to {account.name} failed: {'; '.join(problems)}")


def thread_ids(proc: Path = Path("/proc/self")) -> list[tuple[str, list[int], list[int]]]:
    """(task id, Uid fields, Gid fields) of every thread, from /proc (Linux); empty
    where /proc is not mounted."""
    found: list[tuple[str, list[int], list[int]]] = []
    try:
        tasks = sorted(os.listdir(proc / "task"))
    except OSError:
        return found
    for task in tasks:
        try:
            status = (proc / "task" / task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        uids, gids = status_ids(status)
        found.append((task, uids, gids))
    return found


def status_ids(status: str) -> tuple[list[int], list[int]]:
    """The Uid and Gid lines (real, effective, saved, filesystem) of a /proc status file."""
    uids: list[int] = []
    gids: list[int] = []
    for line in status.splitlines():
        if line.startswith("Uid:"):
            uids = [int(x) for x in line.split()[1:]]
        elif line.startswith("Gid:"):
            gids = [int(x) for x in line.split()[1:]]
    return uids, gids
