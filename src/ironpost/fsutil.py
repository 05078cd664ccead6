"""Durable file replacement: the one way ironpost rewrites a file in place.

Owns :func:`write_atomic` (temporary file in the same directory, mode and owner set on
the descriptor before any byte is written, fsync, rename over the old file, fsync of the
directory) and :func:`fsync_dir`. Readers see the old file or the new one, never half of
one; a crash at any point leaves one of the two on disk; a failure removes the temporary
file. Used for the passwd file, the log privacy keys, rewritten logs, the DKIM signing
table and the generated TLS certificate; Maildir delivery uses :func:`fsync_dir`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> None:
    """Replace ``path`` by ``data`` with ``mode`` (and ``owner`` (uid, gid) when given and
    permitted: root rewriting a file that the server's account must keep reading)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            with contextlib.suppress(PermissionError):
                os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
