"""The pseudonymisation keys: ``$data_directory/maillog.key``, its rotation and pruning.

Owns the key file. One line per key, newest first: ``<created epoch> <64 hex digits>``.
Invariants:
- The file is mode 0600 and replaced atomically (write a temporary file, fsync, rename),
  under an exclusive lock (``maillog.key.lock``), so the server and a CLI rotating at the
  same moment make one new key, not two.
- The newest key signs new log lines. A key retired less than ``retention_days`` ago is
  kept, because logs written under it still exist and ``ironpost privacy find`` must
  compute its tokens; an older one is deleted (its logs are gone too). With
  ``retention_days == 0`` (logs kept forever) every key is kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ironpost.fsutil import write_atomic
from ironpost.maillog.privacy import Pseudonymizer, key_id

KEY_FILE = "maillog.key"
KEY_BYTES = 32
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class LogKey:
    created: float
    secret: bytes = b""

    def __repr__(self) -> str:  # never print a secret by accident
        return f"LogKey(created={self.created:.0f})"


class KeyFileError(ValueError):
    """The key file exists but is not ours to trust (bad syntax, bad mode)."""


def parse_keys(text: str) -> list[LogKey]:
    """The keys in ``text``, newest first; raises :class:`KeyFileError` on a bad line."""
    keys: list[LogKey] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            created_text, hex_key = line.split()
            secret = bytes.fromhex(hex_key)
            created = float(created_text)
        except ValueError:
            raise KeyFileError(f"line {number}: expected '<epoch> <hex key>'") from None
        if len(secret) < 16:
            raise KeyFileError(f"line {number}: key shorter than 16 bytes")
        keys.append(LogKey(created, secret))
    keys.sort(key=lambda k: k.created, reverse=True)
    return keys


def format_keys(keys: list[LogKey]) -> str:
    head = "# ironpost maillog pseudonymisation keys, newest first; keep private (0600)\n"
    return head + "".join(f"{k.created:.0f} {k.secret.hex()}\n" for k in keys)


def load_keys(path: Path) -> list[LogKey]:
    """The keys in ``path`` (empty when it does not exist)."""
    try:
        return parse_keys(path.read_text(encoding="ascii"))
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a key file") from None


def prune(keys: list[LogKey], *, now: float, retention_days: int) -> list[LogKey]:
    """Drop keys retired (replaced by a newer one) more than ``retention_days`` ago."""
    if retention_days <= 0 or not keys:
        return list(keys)
    horizon = now - retention_days * DAY
    kept = [keys[0]]
    for newer, key in itertools.pairwise(keys):
        if newer.created >= horizon:  # ``key`` signed lines until ``newer`` was made
            kept.append(key)
    return kept


def due(keys: list[LogKey], *, now: float, rotation: float) -> bool:
    return not keys or now - keys[0].created >= rotation


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, keys: list[LogKey]) -> None:
    write_atomic(path, format_keys(keys).encode("ascii"), mode=0o600)


def current_keys(
    path: Path, *, now: float, rotation: float, retention_days: int, create: bool = True
) -> list[LogKey]:
    """The keys, newest (the one to use) first: made or rotated and pruned when due.

    With ``create`` false (``privacy find``), the file is only read.
    """
    keys = load_keys(path)
    if not create:
        return keys
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077:  # a copy or an editor loosened it: tighten
            path.chmod(0o600)
    pruned = prune(keys, now=now, retention_days=retention_days)
    if not due(keys, now=now, rotation=rotation) and pruned == keys:
        return keys
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(path):
        keys = load_keys(path)  # another process may have rotated meanwhile
        if due(keys, now=now, rotation=rotation):
            keys.insert(0, LogKey(now, secrets.token_bytes(KEY_BYTES)))
        keys = prune(keys, now=now, retention_days=retention_days)
        _write(path, keys)
    return keys


class KeyedPseudonymizer:
    """The pseudonymiser under the current key of ``path``, re-keyed when it rotates."""

    def __init__(self, path: Path, *, rotation: float, retention_days: int, now: float) -> None:
        self.path = path
        self.rotation = rotation
        self.retention_days = retention_days
        self._key = b""
        self._scrub = Pseudonymizer(b"\0" * 16)
        self.maintain(now)

    def maintain(self, now: float) -> None:
        keys = current_keys(
            self.path, now=now, rotation=self.rotation, retention_days=self.retention_days
        )
        if keys[0].secret != self._key:
            self._key = keys[0].secret
            self._scrub = Pseudonymizer(self._key)

    @property
    def key_id(self) -> str:
        return key_id(self._key)

    def __call__(self, text: str) -> str:
        return self._scrub(text)
