"""The built-in back-end's passwd file: reading it live, rewriting it safely.

Owns the file format, user-name rules and the file's on-disk life. The format is
Dovecot's passwd-file, so an existing Dovecot file can be used as is::

    user:{SCHEME}hash:uid:gid:gecos:home:shell:extra fields

Only the first two fields matter to ironpost; the others are kept verbatim on rewrite.
``#`` comment lines and blank lines are allowed and kept. The eighth field is Dovecot's
space-separated ``key=value`` extra fields; ironpost stores a user's SCRAM-SHA-256
credentials there as one ``scram={SCRAM-SHA-256}iter,salt,storedkey,serverkey`` token
(no ``userdb_`` prefix, so Dovecot ignores it). A password field that is itself
``{SCRAM-SHA-256}…`` (Dovecot's own SCRAM scheme) also serves as SCRAM credentials.

User names: compared exactly, except that the domain part (after the last ``@``) is
lower-cased, both in the file and in a login, since domains are case-insensitive and
local parts, formally, are not. A name must be non-empty, at most 255 bytes, without
``:``, white space or control characters, and must not start with ``#``. The first line
for a name wins; later duplicates are reported.

Invariants:

* :meth:`PasswdFile.lookup` re-reads the file when its (mtime_ns, size, inode) changed,
  looking at most once per ``check_interval`` seconds, so a running server sees
  ``ironpost passwd`` edits without a restart; a missing file means no users;
* a malformed line is reported through ``warn`` as ``file:line: problem`` (never quoting
  the line, which may hold a hash) and skipped, and is kept verbatim on rewrite;
* a rewrite is atomic (temporary file in the same directory, fsync, rename, fsync of the
  directory), mode 0600, keeps the previous file's owner and group when it can, and is
  serialised against other writers by ``flock`` on ``<file>.lock``;
* no exception or warning text contains a password or a hash.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ironpost.fsutil import write_atomic
from ironpost.sasl import hashes

SCRAM_FIELD = "scram="
_EXTRA = 7  # index of the extra-fields field in the split line
_MAX_USER_BYTES = 255


class PasswdError(Exception):
    """A refused edit or an unreadable file; the message names no secret."""


class _Settings(Protocol):
    def text(self, name: str) -> str: ...


def passwd_path(settings: _Settings, config_dir: Path | None) -> Path:
    """Where ``smtpd_sasl_passwd_file`` points. A relative value is taken relative to the
    config directory, or to ``data_directory`` with the embedded config (no directory)."""
    value = Path(settings.text("smtpd_sasl_passwd_file"))
    if value.is_absolute():
        return value
    base = config_dir if config_dir is not None else Path(settings.text("data_directory"))
    return base / value


def canonical_user(name: str) -> str:
    """The key a name is stored and looked up under: the domain part lower-cased."""
    local, at, domain = name.rpartition("@")
    return f"{local}@{domain.lower()}" if at else name


def user_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user in the file, or None when it can."""
    if not name:
        return "empty user name"
    if len(name.encode("utf-8", "surrogatepass")) > _MAX_USER_BYTES:
        return f"user name longer than {_MAX_USER_BYTES} bytes"
    if name.startswith("#"):
        return "user name starts with '#'"
    if ":" in name:
        return "user name contains ':'"
    for c in name:
        if c.isspace():
            return "user name contains white space"
        if not c.isprintable():
            return "user name contains a control character"
    return None


@dataclass(frozen=True, slots=True)
class Entry:
    """One user. ``password`` is the stored ``{SCHEME}hash``; ``scram`` the stored
    ``{SCRAM-SHA-256}…`` credentials or None. Neither appears in the repr."""

    user: str
    password: str = field(repr=False)
    scram: str | None = field(default=None, repr=False)
    line: int = 0


@dataclass(frozen=True, slots=True)
class _Snapshot:
    entries: dict[str, Entry]
    all_scram: bool


_EMPTY = _Snapshot({}, False)


def _scram_of(fields: list[str]) -> str | None:
    if fields[1][: len(hashes.SCRAM_SCHEME)].upper() == hashes.SCRAM_SCHEME:
        return fields[1]
    if len(fields) > _EXTRA:
        for token in fields[_EXTRA].split():
            if token.startswith(SCRAM_FIELD):
                return token[len(SCRAM_FIELD) :]
    return None


def _parse_line(raw: bytes) -> tuple[list[str] | None, str | None]:
    """(fields, None) for a user line, (None, None) for a comment or blank line, and
    (None, problem) for a malformed one."""
    try:
        text = raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    if not text.strip() or text.lstrip().startswith("#"):
        return None, None
    fields = text.split(":", _EXTRA)  # the extra fields may themselves hold ':'
    if len(fields) < 2:
        return None, "expected user:password"
    problem = user_problem(fields[0])
    if problem:
        return None, problem
    return fields, None


def _parse(data: bytes, origin: str, warn: Callable[[str], None]) -> _Snapshot:
    entries: dict[str, Entry] = {}
    all_scram = True
    for number, raw in enumerate(data.split(b"\n"), 1):
        fields, problem = _parse_line(raw)
        if problem:
            warn(f"{origin}:{number}: {problem}; line ignored")
        if fields is None:
            continue
        key = canonical_user(fields[0])
        if key in entries:
            warn(f"{origin}:{number}: duplicate user (first at line {entries[key].line}); ignored")
            continue
        scram = _scram_of(fields)
        if scram is not None:
            try:
                hashes.parse_scram(scram)
            except ValueError as exc:
                warn(f"{origin}:{number}: {exc}; SCRAM disabled for this user")
                scram = None
        all_scram = all_scram and scram is not None
        entries[key] = Entry(key, fields[1], scram, number)
    return _Snapshot(entries, all_scram and bool(entries))


def _ignore(message: str) -> None:
    pass


class PasswdFile:
    """A passwd file, read lazily and kept current. Thread-safe."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        warn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        check_interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self._warn = warn or _ignore
        self._clock = clock
        self._interval = check_interval
        self._lock = threading.Lock()
        self._checked: float | None = None
        self._signature: tuple[int, int, int] | None = None
        self._snapshot = _EMPTY
        self._exists = False

    # -- reading ------------------------------------------------------------------------

    def _current(self) -> _Snapshot:
        with self._lock:
            now = self._clock()
            if self._checked is not None and now - self._checked < self._interval:
                return self._snapshot
            self._checked = now
            self._refresh()
            return self._snapshot

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._snapshot, self._signature, self._exists = _EMPTY, None, False
            return
        except OSError as exc:
            raise PasswdError(f"{self.path}: cannot stat: {exc.strerror or exc}") from None
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._signature:
            return
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._snapshot, self._signature, self._exists = _EMPTY, None, False
            return
        except OSError as exc:
            raise PasswdError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        self._snapshot = _parse(data, str(self.path), self._warn)
        self._signature, self._exists = signature, True

    @property
    def exists(self) -> bool:
        self._current()
        return self._exists

    def lookup(self, user: str) -> Entry | None:
        """The entry for ``user`` (domain part compared case-insensitively), or None.
        Raises :class:`PasswdError` when the file exists but cannot be read."""
        return self._current().entries.get(canonical_user(user))

    def users(self) -> list[str]:
        """User names, in file order."""
        return list(self._current().entries)

    def all_scram(self) -> bool:
        """True when the file has users and every one of them has SCRAM credentials."""
        return self._current().all_scram

    # -- writing ------------------------------------------------------------------------

    def add(self, user: str, password: str, *, scram: bool = True) -> None:
        """Add a user; :class:`PasswdError` if the name is taken or refused."""
        key = self._checked_name(user)
        with self._edit() as lines:
            if _find(lines, key):
                raise PasswdError(f"{user}: user already exists in {self.path}")
            lines.append(_format(key, password, scram, []).encode())

    def set(self, user: str, password: str, *, scram: bool = True) -> None:
        """Replace an existing user's password, keeping the line's other fields."""
        key = self._checked_name(user)
        with self._edit() as lines:
            found = _find(lines, key)
            if not found:
                raise PasswdError(f"{user}: no such user in {self.path}")
            first, fields = found[0]
            lines[first] = _format(fields[0], password, scram, fields).encode()
            for index, _ in reversed(found[1:]):
                del lines[index]

    def delete(self, user: str) -> None:
        """Remove every line for ``user``; :class:`PasswdError` if there is none."""
        key = canonical_user(user)
        with self._edit() as lines:
            found = _find(lines, key)
            if not found:
                raise PasswdError(f"{user}: no such user in {self.path}")
            for index, _ in reversed(found):
                del lines[index]

    def _checked_name(self, user: str) -> str:
        problem = user_problem(user)
        if problem:
            raise PasswdError(f"refused user name: {problem}")
        return canonical_user(user)

    @contextlib.contextmanager
    def _edit(self) -> Iterator[list[bytes]]:
        """Lock, read the file fresh (never the cache: another writer may have been
        first), let the caller edit its lines, write it back atomically."""
        directory = self.path.parent
        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                data = self.path.read_bytes()
                old = os.stat(self.path)
            except FileNotFoundError:
                data, old = b"", None
            except OSError as exc:
                raise PasswdError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
            lines = data.split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            yield lines
            body = b"".join(line + b"\n" for line in lines)
            self._write(directory, body, old)
        finally:
            os.close(lock_fd)  # releases the flock
        with self._lock:
            self._checked = None  # our own change is visible at once

    def _write(self, directory: Path, body: bytes, old: os.stat_result | None) -> None:
        # Keep the owner (e.g. root editing the file the server's user reads).
        owner = (old.st_uid, old.st_gid) if old is not None else None
        write_atomic(self.path, body, mode=0o600, owner=owner)


def _find(lines: list[bytes], key: str) -> list[tuple[int, list[str]]]:
    found = []
    for index, raw in enumerate(lines):
        fields, _ = _parse_line(raw)
        if fields is not None and canonical_user(fields[0]) == key:
            found.append((index, fields))
    return found


def _format(user: str, password: str, scram: bool, old: list[str]) -> str:
    if not password:
        raise PasswdError("refused: empty password")
    fields = [user, hashes.hash_password(password), *old[2:]]
    fields += [""] * (_EXTRA + 1 - len(fields))
    extra = [t for t in fields[_EXTRA].split() if not t.startswith(SCRAM_FIELD)]
    if scram:
        extra.append(SCRAM_FIELD + hashes.scram_credentials(password))
    fields[_EXTRA] = " ".join(extra)
    # Trailing empty fields are dropped, as Dovecot's own tools write user:hash lines.
    while len(fields) > 2 and not fields[-1]:
        fields.pop()
    return ":".join(fields)
