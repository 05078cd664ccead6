"""Where log lines go: a stream, a file that rotates daily, the local syslog socket.

Owns the log files on disk: their mode, their daily rotation to ``NAME.YYYYMMDD`` and
the deletion of those older than the retention.
Invariants:
- A write never blocks the event loop on another process and never raises: lines wait in
  memory while ``ironpost privacy erase`` holds the file's lock (bounded; past the bound
  they are written anyway), and a full disk loses log lines, never mail.
- Every flush writes to the file *currently* at the path: when erase (or an
  administrator's logrotate) has replaced it, the sink reopens before writing, so no line
  goes to an unlinked file.
- Files are created and kept at ``mode`` (0600 or 0640) whatever the umask.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import socket
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Protocol, TextIO

_BUFFERED_LINES = 512  # flush from emit() past this many lines
_MAX_HELD_BYTES = 8 << 20  # lines held while another process has the lock


class Sink(Protocol):
    def write(self, line: str) -> None: ...
    def flush(self) -> None: ...
    def maintain(self, now: float) -> None: ...
    def close(self) -> None: ...


class StreamSink:
    """An already open text stream (stderr, stdout, a test's StringIO); never rotated."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, line: str) -> None:
        try:
            self.stream.write(line)
        except (OSError, ValueError):
            pass  # a full log disk must never stop mail

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def maintain(self, now: float) -> None:
        pass

    def close(self) -> None:
        self.flush()
        if self.stream not in (sys.stderr, sys.stdout):
            with contextlib.suppress(OSError, ValueError):
                self.stream.close()


def _local_day(now: float) -> date:
    t = time.localtime(now)
    return date(t.tm_year, t.tm_mon, t.tm_mday)


def rotated_name(path: Path, day: date) -> str:
    return f"{path.name}.{day:%Y%m%d}"


def rotated_files(path: Path) -> list[tuple[date, Path]]:
    """``path``'s rotated copies (``NAME.YYYYMMDD`` and ``NAME.YYYYMMDD-N``), oldest first."""
    pattern = re.compile(re.escape(path.name) + r"\.(\d{4})(\d{2})(\d{2})(?:-(\d+))?")
    found: list[tuple[date, int, Path]] = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None:
            continue
        try:
            day = date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            continue
        found.append((day, int(m[4] or 0), entry))
    found.sort(key=lambda item: (item[0], item[1]))
    return [(day, p) for day, _, p in found]


def log_files(path: Path) -> list[Path]:
    """Every file of this log, oldest first: the rotated copies, then the live file."""
    files = [p for _, p in rotated_files(path)]
    if path.exists():
        files.append(path)
    return files


def open_log(path: Path, mode: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    with contextlib.suppress(OSError):  # not ours (a shared log): leave its mode alone
        if os.fstat(fd).st_mode & 0o777 != mode:
            os.fchmod(fd, mode)
    return fd


class FileSink:
    """``maillog_file``: appended through our own buffer, rotated at local midnight."""

    def __init__(
        self, path: Path, *, mode: int = 0o600, retention_days: int = 0, now: float | None = None
    ) -> None:
        self.path = Path(path)
        self.mode = mode
        self.retention_days = retention_days
        self._buffer: list[str] = []
        self._held = 0
        self._fd = open_log(self.path, mode)
        st = os.fstat(self._fd)
        current = time.time() if now is None else now
        # A file left by an earlier run holds that day's lines: rotate it under its day.
        self._day = _local_day(st.st_mtime) if st.st_size else _local_day(current)
        self.maintain(current)

    # -- writing ---------------------------------------------------------------------

    def write(self, line: str) -> None:
        self._buffer.append(line)
        if len(self._buffer) >= _BUFFERED_LINES:
            self.flush()

    def flush(self) -> None:
        if not self._buffer or self._fd < 0:
            return
        data = "".join(self._buffer).encode("utf-8", "backslashreplace")
        try:
            locked = self._lock(blocking=False)
        except OSError:
            return
        if not locked and len(data) < _MAX_HELD_BYTES:
            return  # erase is rewriting the file: keep the lines for the next flush
        try:
            self._follow_path()
            _write_all(self._fd, data)
            self._buffer.clear()
        except OSError:
            self._buffer.clear()  # a full disk: drop, as syslog would; mail goes on
        finally:
            if locked:
                self._unlock()

    def _lock(self, *, blocking: bool) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    def _unlock(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _follow_path(self) -> None:
        """Reopen when the path no longer names our file (erase replaced it, logrotate
        moved it). Called with our lock held; the new file is locked in turn."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        mine = os.fstat(self._fd)
        if st is not None and (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev):
            return
        old = self._fd
        self._fd = open_log(self.path, self.mode)
        self._lock(blocking=True)  # a brand-new file: nobody else holds it for long
        with contextlib.suppress(OSError):
            fcntl.flock(old, fcntl.LOCK_UN)
        os.close(old)

    # -- rotation and retention --------------------------------------------------------

    def maintain(self, now: float) -> None:
        """Rotate when the local day has changed; delete copies past the retention."""
        if self.retention_days <= 0:
            return
        today = _local_day(now)
        if today != self._day:
            self._rotate(today)
        self._prune(today)

    def _rotate(self, today: date) -> None:
        self.flush()
        try:
            if not self._lock(blocking=False):
                return  # erase holds the file; try again at the next maintain()
        except OSError:
            return
        try:
            self._follow_path()
            if os.fstat(self._fd).st_size:
                target = self.path.with_name(rotated_name(self.path, self._day))
                n = 0
                while target.exists():
                    n += 1
                    target = self.path.with_name(f"{rotated_name(self.path, self._day)}-{n}")
                os.rename(self.path, target)
            old = self._fd
            self._fd = open_log(self.path, self.mode)
            self._day = today
            self._unlock_fd(old)
        except OSError:
            self._unlock()

    @staticmethod
    def _unlock_fd(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def _prune(self, today: date) -> None:
        horizon = today - timedelta(days=self.retention_days)
        for day, path in rotated_files(self.path):
            if day < horizon:
                with contextlib.suppress(OSError):
                    path.unlink()

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[written:]


FACILITIES = {
    "user": 1,
    "mail": 2,
    "daemon": 3,
    **{f"local{n}": 16 + n for n in range(8)},
}
_INFO = 6


class SyslogSink:
    """RFC 3164 datagrams to the local syslog socket; sent at flush, not per line."""

    def __init__(self, facility: str = "mail", address: str = "/dev/log") -> None:
        self.prefix = f"<{FACILITIES[facility] * 8 + _INFO}>"
        self.address = address
        self._buffer: list[str] = []
        self._sock: socket.socket | None = None

    def write(self, line: str) -> None:
        """``line``: ``Mon DD HH:MM:SS tag[pid]: text`` (syslogd adds the host)."""
        self._buffer.append(line)

    def flush(self) -> None:
        lines, self._buffer = self._buffer, []
        for line in lines:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    sock.connect(self.address)
                    self._sock = sock
                self._sock.send((self.prefix + line).encode("utf-8", "backslashreplace"))
            except OSError as exc:
                self._reset()
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    return  # no syslogd: drop, and try again at the next flush

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def maintain(self, now: float) -> None:
        pass

    def close(self) -> None:
        self.flush()
        self._reset()
