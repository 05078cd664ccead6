"""Postfix-format maillog lines, one event per line, keyed by queue id.

Owns the line format (``Mon DD HH:MM:SS host ironpost/service[pid]: text``) that
pflogsumm and the usual log tools parse, and where the lines go (a file, stderr).
Every component that logs a mail event gets a :class:`MailLog` from its constructor.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _stamp(now: float) -> str:
    t = time.localtime(now)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


class MailLog:
    """Writes Postfix-style log lines. Thread-safe.

    Lines are buffered and reach the file when :meth:`flush` runs (the server calls it
    a few times a second and at shutdown) or when the buffer fills: a write syscall per
    line was the largest single cost on the accept path. Like syslog, a crash can lose
    the last fraction of a second of log, never mail.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        hostname: str,
        syslog_name: str = "ironpost",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stream = stream
        self._host = hostname.split(".", 1)[0] or "localhost"
        self._name = syslog_name
        self._clock = clock
        self._pid = os.getpid()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str, *, hostname: str, syslog_name: str = "ironpost") -> MailLog:
        """``path`` empty or ``/dev/stderr`` logs to stderr; otherwise append to the file (0600)."""
        if not path or path in ("/dev/stderr", "-"):
            return cls(sys.stderr, hostname=hostname, syslog_name=syslog_name)
        if path == "/dev/stdout":
            return cls(sys.stdout, hostname=hostname, syslog_name=syslog_name)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        stream = os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
        return cls(stream, hostname=hostname, syslog_name=syslog_name)

    def emit(self, service: str, text: str) -> None:
        """Log ``text`` as ``ironpost/<service>[pid]``. Control characters are escaped."""
        if not text.isprintable():
            text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
        line = f"{_stamp(self._clock())} {self._host} {self._name}/{service}[{self._pid}]: {text}\n"
        with self._lock:
            try:
                self._stream.write(line)
            except (OSError, ValueError):
                pass  # a full log disk must never stop mail

    def flush(self) -> None:
        with self._lock:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                pass

    # The events below keep the exact wording pflogsumm and friends parse.

    def delivery(
        self,
        service: str,
        queue_id: str,
        *,
        to: str,
        orig_to: str | None,
        relay: str,
        delay: float,
        delays: tuple[float, float, float, float],
        dsn: str,
        status: str,
        detail: str,
    ) -> None:
        """``to=<…>, [orig_to=<…>,] relay=…, delay=…, delays=a/b/c/d, dsn=…, status=… (…)``."""
        orig = f" orig_to=<{orig_to}>," if orig_to and orig_to != to else ""
        ds = "/".join(_fmt_delay(d) for d in delays)
        self.emit(
            service,
            f"{queue_id}: to=<{to}>,{orig} relay={relay}, delay={_fmt_delay(delay)}, "
            f"delays={ds}, dsn={dsn}, status={status} ({detail})",
        )

    def close(self) -> None:
        self.flush()
        if self._stream not in (sys.stderr, sys.stdout):
            self._stream.close()


def _fmt_delay(seconds: float) -> str:
    # Postfix: two significant digits below 10 s, whole seconds above.
    if seconds < 0.01:
        return "0"
    if seconds < 10:
        return f"{seconds:.2g}" if seconds < 1 else f"{seconds:.1f}"
    return f"{seconds:.0f}"
