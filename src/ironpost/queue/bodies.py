"""Large message bodies, kept in files beside the database instead of in it.

A body in a row is written three times (into the WAL, fsynced; into the database file by
the checkpoint; freed again at removal), which made the writer thread the limit for
large mail. A body of at least ``threshold`` bytes is therefore written once, to
``<queue_directory>/bodies/<fan-out>/<queue id>`` (mode 0600, created with ``O_EXCL``,
fsynced; a directory new to this process is fsynced into its parent), on a helper
thread, *before* the transaction that inserts its message. Its ``message_content`` row
then holds an empty blob and ``file_size``, the file's length; a NULL ``file_size`` means
the bytes are in the row. The fan-out is the id's last two timestamp digits (the
microseconds, mod 1296), which spread mail evenly over at most 1296 directories.

Invariants:
- a row with a ``file_size`` commits only after its file was fsynced, and its insert job
  checks, under the database write lock, that the file is still there; :func:`sweep`
  runs under the same lock, so it can never remove the body of a message about to commit;
- a file is unlinked only after the commit that removed its row (a crash in between
  leaves an orphan, never a row without its body);
- an orphan (a file without a row: a crash or failure between write and commit, or
  between commit and unlink) is removed by :func:`sweep` at startup;
- a missing or short file behind a live row raises :class:`CorruptRecord`, nothing else;
- a file or directory made by root (``sendmail`` run by root) is given to the owner of
  the queue directory, as SQLite does with its WAL, so the server (``mail_owner``) can
  read and remove it;
- only well-formed queue ids (:func:`~ironpost.queue.ids.is_queue_id`) name files, so
  an id can never reach outside the directory; other ids keep their body in the row.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ironpost.queue.ids import STAMP_WIDTH, is_queue_id
from ironpost.queue.model import CorruptRecord

#: Default ``queue_body_file_threshold``: bodies this large or larger go to a file.
BODY_FILE_THRESHOLD = 256 * 1024
DIR_NAME = "bodies"
_FANOUT = slice(STAMP_WIDTH - 2, STAMP_WIDTH)
_THREADS = 4  # bodies written at once; their fsyncs share the file system's journal commits
_CHUNK = 500  # ids per statement, within SQLite's bound-parameter limit
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BodyFiles:
    """The ``bodies`` directory of one queue. ``threshold`` 0: never write a file (files
    already there are still read and removed)."""

    def __init__(self, directory: Path, threshold: int) -> None:
        self.directory = Path(directory)
        self.threshold = threshold
        self._known: set[Path] = set()  # directories known to exist durably
        self._pool: ThreadPoolExecutor | None = None
        self._owner: tuple[int, int] | None = None  # (uid, gid) to give root's files to
        if os.geteuid() == 0:
            st = self.directory.parent.stat()
            if st.st_uid != 0:
                self._owner = (st.st_uid, st.st_gid)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def write_async(self, message_id: str, content: bytes | bytearray | memoryview) -> Path:
        """:meth:`write` on a helper thread (several bodies are written and fsynced at once)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._threads(), self.write, message_id, content
        )

    async def discard_async(self, message_ids: Iterable[str]) -> int:
        return await asyncio.get_running_loop().run_in_executor(
            self._threads(), self.discard, message_ids
        )

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="ironpost-queue-body")
        return self._pool

    def wanted(self, message_id: str, size: int) -> bool:
        """Whether a body of ``size`` bytes for ``message_id`` goes to a file."""
        return 0 < self.threshold <= size and is_queue_id(message_id)

    def path(self, message_id: str) -> Path:
        return self.directory / message_id[_FANOUT] / message_id

    def write(self, message_id: str, content: bytes | bytearray | memoryview) -> Path:
        """Create the body file, write ``content`` and fsync it; nothing is left behind
        if this fails (a file that already exists is not ours and stays)."""
        path = self.path(message_id)
        self._ensure_dir(path.parent)
        fd = os.open(path, _WRITE_FLAGS, 0o600)
        try:
            if self._owner is not None:
                os.fchown(fd, *self._owner)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        return path

    def _ensure_dir(self, directory: Path) -> None:
        if directory in self._known:
            return
        for parent, child in ((self.directory.parent, self.directory), (self.directory, directory)):
            if child in self._known:
                continue
            try:
                os.mkdir(child, 0o700)
                if self._owner is not None:
                    os.chown(child, *self._owner, follow_symlinks=False)
            except FileExistsError:
                pass
            # Fsynced even when it existed: another thread may have just created it and
            # not yet made its entry durable, and this happens once per directory.
            _fsync_dir(parent)
            self._known.add(child)

    def read(self, message_id: str, size: int) -> bytes:
        """The body of ``size`` bytes; :class:`CorruptRecord` if it is missing or short."""
        path = self.path(message_id)
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError as exc:
            raise CorruptRecord(f"body file missing: {path}") from exc
        with open(fd, "rb", buffering=0) as f:
            data = f.read()  # one read: FileIO sizes its buffer from fstat
        if len(data) != size:
            raise CorruptRecord(f"body file {path}: {len(data)} bytes, expected {size}")
        return data

    def discard(self, message_ids: Iterable[str]) -> int:
        """Unlink these bodies; return how many existed. Errors are ignored: a file left
        behind is an orphan, which :func:`sweep` removes."""
        count = 0
        for message_id in message_ids:
            try:
                os.unlink(self.path(message_id))
                count += 1
            except OSError:
                continue
        return count

    def sweep(self, conn: sqlite3.Connection) -> int:
        """Remove every file whose message has no row (or a row without ``file_size``);
        return how many. Run it inside a write transaction (see the invariants)."""
        if not self.directory.is_dir():
            return 0
        live = set(all_ids_with_files(conn))
        removed = 0
        with os.scandir(self.directory) as fanouts:
            for fanout in fanouts:
                if not fanout.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(fanout.path) as files:
                    for entry in files:
                        if entry.name in live:
                            continue
                        try:
                            os.unlink(entry.path)
                            removed += 1
                        except OSError:
                            continue
        return removed


def ids_with_files(conn: sqlite3.Connection, message_ids: Sequence[str]) -> set[str]:
    """Those of ``message_ids`` whose body is in a file."""
    found: set[str] = set()
    for start in range(0, len(message_ids), _CHUNK):
        chunk = list(message_ids[start : start + _CHUNK])
        marks = ", ".join("?" * len(chunk))
        found.update(
            str(r[0])
            for r in conn.execute(
                "SELECT message_id FROM message_content"
                f" WHERE message_id IN ({marks}) AND file_size IS NOT NULL",
                chunk,
            )
        )
    return found


def all_ids_with_files(conn: sqlite3.Connection) -> list[str]:
    return [
        str(r[0])
        for r in conn.execute("SELECT message_id FROM message_content WHERE file_size IS NOT NULL")
    ]
