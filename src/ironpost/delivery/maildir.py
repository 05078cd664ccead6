"""Maildir delivery: one message into one Maildir, durably.

Owns the on-disk Maildir protocol (tmp/ -> new/, unique names, LF line ends) and
nothing else: no routing, no queue, no logging. It is synchronous and runs in a worker
thread of the Maildir transport (delivery.local).

Invariants:
- When :func:`deliver_to_maildir` returns, the message is in ``new/`` and both the file
  and the directory entry have been fsynced: a power loss cannot lose it. Only then may
  the caller mark the recipient delivered.
- It never leaves a file behind in ``tmp/``: a failure removes the partial file and
  re-raises the ``OSError`` (the caller turns it into a deferral).
- It never overwrites an existing message: the name is unique per the Maildir spec, and
  ``link(2)`` (unlike ``rename(2)``) fails rather than replacing an existing file.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from pathlib import Path

from ironpost.fsutil import fsync_dir

__all__ = [
    "deliver_lf_to_maildir",
    "deliver_to_maildir",
    "ensure_maildir",
    "to_lf",
    "unique_name",
]

# itertools.count.__next__ is atomic under the GIL, so threads never share a value.
_counter = itertools.count(1)

# Errors that mean "this file system has no hard links", where rename(2) must do instead.
_NO_LINK = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _escape_host(hostname: str) -> str:
    # The Maildir spec: "/" and ":" cannot appear in a name (":" starts the info part).
    return hostname.replace("/", "\\057").replace(":", "\\072") or "localhost"


def unique_name(hostname: str, size: int | None = None, *, now: float | None = None) -> str:
    """``<sec>.M<usec>P<pid>Q<n>R<random>.<host>[,S=<size>]`` (Maildir spec + Dovecot).

    Unique across processes (pid), threads (the counter), restarts within the same
    microsecond (random) and hosts sharing the mailbox over NFS (hostname).
    """
    t = time.time() if now is None else now
    sec = int(t)
    usec = int((t - sec) * 1_000_000)
    name = (
        f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}R{os.urandom(8).hex()}."
        f"{_escape_host(hostname)}"
    )
    return name if size is None else f"{name},S={size}"


class _DirSync:
    """Group fsync of one directory: one fsync covers every link made before it started.

    Several pool threads delivering to one busy Maildir each need ``new/`` fsynced after
    their link. A thread that finds an fsync of the directory already running waits for
    the *next* one (which starts after its link, so it covers it) instead of issuing its
    own: under load, one directory fsync serves many messages. Correctness rests on
    ordering only: ``requested`` is bumped after the caller's link, and a finished fsync
    satisfies exactly the requests made before it started.
    """

    __slots__ = ("cond", "done", "requested", "running")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.requested = 0
        self.done = 0
        self.running = False

    def sync(self, path: Path) -> None:
        with self.cond:
            self.requested += 1
            mine = self.requested
            while self.done < mine:
                if self.running:
                    self.cond.wait()
                    continue
                self.running = True
                target = self.requested
                self.cond.release()
                try:
                    fsync_dir(path)
                finally:
                    self.cond.acquire()
                    self.running = False
                    self.cond.notify_all()
                # Reached only when the fsync succeeded (an error propagates to this
                # caller; the others retry with an fsync of their own).
                self.done = max(self.done, target)


_dir_syncs: dict[Path, _DirSync] = {}
_dir_syncs_lock = threading.Lock()
_DIR_SYNCS_MAX = 4096


def _sync_dir(path: Path) -> None:
    with _dir_syncs_lock:
        syncer = _dir_syncs.get(path)
        if syncer is None:
            if len(_dir_syncs) >= _DIR_SYNCS_MAX:
                # Forget idle directories; a running one keeps its entry.
                for key in [k for k, v in _dir_syncs.items() if not v.running]:
                    del _dir_syncs[key]
            syncer = _dir_syncs[path] = _DirSync()
    syncer.sync(path)


def ensure_maildir(maildir: Path) -> None:
    """Create ``maildir`` and its ``tmp``, ``new``, ``cur`` (mode 0700) where missing.

    The new directory entries are fsynced too, or a crash could take a freshly created
    Maildir, and the message in it, away again.
    """
    created = False
    if not maildir.is_dir():
        maildir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fsync_dir(maildir.parent)
        created = True
    for sub in ("tmp", "new", "cur"):
        try:
            (maildir / sub).mkdir(mode=0o700)
            created = True
        except FileExistsError:
            pass
    if created:
        fsync_dir(maildir)


def _header_value(text: str) -> str:
    # Addresses come from the SMTP grammar, which forbids CR/LF; never trust that here,
    # since a stray line break would let a sender forge headers in the mailbox.
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return text


def _write_all(fd: int, head: bytes, body: bytes) -> None:
    # writev avoids copying the (possibly large) body just to prepend two header lines.
    parts = [memoryview(head), memoryview(body)]
    while parts:
        n = os.writev(fd, parts)
        while parts and n >= len(parts[0]):
            n -= len(parts[0])
            parts.pop(0)
        if parts and n:
            parts[0] = parts[0][n:]


def _link_or_rename(tmp: Path, new: Path) -> None:
    try:
        os.link(tmp, new)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        os.rename(tmp, new)
    else:
        os.unlink(tmp)


def to_lf(content: bytes) -> bytes:
    """The queue's CRLF line ends as the LF a Maildir file holds (one C-speed pass)."""
    return content.replace(b"\r\n", b"\n")


def deliver_to_maildir(
    maildir: Path, content: bytes, *, return_path: str, delivered_to: str, hostname: str
) -> Path:
    """Deliver ``content`` (CRLF line ends, as queued) into ``maildir``; return the new file.

    Prepends ``Return-Path: <return_path>`` (``<>`` for the null sender) and
    ``Delivered-To: delivered_to``, converts CRLF to LF, writes into ``tmp/``, fsyncs,
    links into ``new/``, unlinks the tmp file and fsyncs ``new/``. Raises ``OSError`` on
    any failure, after removing the partial file.
    """
    return deliver_lf_to_maildir(
        maildir,
        to_lf(content),
        return_path=return_path,
        delivered_to=delivered_to,
        hostname=hostname,
    )


def deliver_lf_to_maildir(
    maildir: Path, body: bytes, *, return_path: str, delivered_to: str, hostname: str
) -> Path:
    """:func:`deliver_to_maildir` for content already converted by :func:`to_lf`.

    Lets a message going to several mailboxes be converted once, not once per mailbox.
    """
    head = (
        f"Return-Path: <{_header_value(return_path)}>\n"
        f"Delivered-To: {_header_value(delivered_to)}\n"
    ).encode()
    name = unique_name(hostname, len(head) + len(body))
    tmp = maildir / "tmp" / name
    new = maildir / "new" / name

    try:
        fd = os.open(tmp, _FILE_FLAGS, 0o600)
    except FileNotFoundError:
        # First delivery to this mailbox: create it (as Postfix virtual(8) does).
        ensure_maildir(maildir)
        fd = os.open(tmp, _FILE_FLAGS, 0o600)
    try:
        try:
            _write_all(fd, head, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            _link_or_rename(tmp, new)
        except FileNotFoundError:
            # tmp/ exists but new/ was removed: repair and retry once.
            ensure_maildir(maildir)
            _link_or_rename(tmp, new)
        _sync_dir(new.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return new
