"""Postfix-format maillog lines, one event per line, keyed by queue id.

Owns the line format (``Mon DD HH:MM:SS host ironpost/service[pid]: text``) that
pflogsumm and the usual log tools parse, or one JSON object per line
(``maillog_format = json``, :mod:`.jsonfmt`); what personal data a line may hold
(``maillog_privacy``, :mod:`.privacy`, keys in :mod:`.keys`); and where lines go
(:mod:`.sinks`: a file rotated daily, stderr/stdout, syslog). Every component that logs a
mail event gets a :class:`MailLog` from its constructor.

Invariants: a line's text passes the privacy scrubber before any sink or format sees
it; control characters never reach a sink (one event, one line); logging never raises
into the caller and never stops mail.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

from ironpost.maillog.jsonfmt import json_line
from ironpost.maillog.keys import KEY_FILE, KeyedPseudonymizer
from ironpost.maillog.privacy import Redactor, Scrubber
from ironpost.maillog.sinks import FileSink, Sink, StreamSink, SyslogSink

if TYPE_CHECKING:
    from ironpost.config.settings import Settings

__all__ = ["LogFormat", "MailLog"]

LogFormat = Literal["text", "json"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MAINTENANCE_INTERVAL = 60.0  # seconds between rotation checks (files, keys)


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
        stream: TextIO | None,
        *,
        hostname: str,
        syslog_name: str = "ironpost",
        clock: Callable[[], float] = time.time,
        scrub: Scrubber | None = None,
        log_format: LogFormat = "text",
        sinks: Sequence[Sink] = (),
        syslog: SyslogSink | None = None,
    ) -> None:
        self._sinks: list[Sink] = [StreamSink(stream)] if stream is not None else []
        self._sinks.extend(sinks)
        self._syslog = syslog
        self._host = hostname.split(".", 1)[0] or "localhost"
        self._name = syslog_name
        self._clock = clock
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._scrub = scrub
        self._json = log_format == "json"
        self._next_maintenance = clock() + _MAINTENANCE_INTERVAL
        self._stamp_second = -1
        self._stamp_text = ""

    @classmethod
    def open(cls, path: str, *, hostname: str, syslog_name: str = "ironpost") -> MailLog:
        """``path`` empty or ``/dev/stderr`` logs to stderr; otherwise append to the file (0600).

        No privacy, no rotation: :meth:`from_settings` is the configured log."""
        if not path or path in ("/dev/stderr", "-"):
            return cls(sys.stderr, hostname=hostname, syslog_name=syslog_name)
        if path == "/dev/stdout":
            return cls(sys.stdout, hostname=hostname, syslog_name=syslog_name)
        return cls(None, hostname=hostname, syslog_name=syslog_name, sinks=[FileSink(Path(path))])

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        hostname: str | None = None,
        clock: Callable[[], float] = time.time,
        syslog_address: str = "/dev/log",
    ) -> MailLog:
        """The log main.cf asks for: ``maillog_file``, ``maillog_format``,
        ``maillog_privacy``, ``maillog_retention_days``, ``maillog_file_mode``,
        ``maillog_syslog``/``syslog_facility``. Raises OSError if the file cannot be opened.

        If the pseudonymisation key cannot be read or made (a CLI run by a user who may
        not read ``$data_directory``), lines are redacted instead: fail closed."""
        now = clock()
        path = settings.text("maillog_file")
        stream: TextIO | None = None
        sinks: list[Sink] = []
        if not path or path in ("/dev/stderr", "-"):
            stream = sys.stderr
        elif path == "/dev/stdout":
            stream = sys.stdout
        else:
            sinks.append(
                FileSink(
                    Path(path),
                    mode=int(settings.text("maillog_file_mode"), 8),
                    retention_days=settings.integer("maillog_retention_days"),
                    now=now,
                )
            )
        syslog = None
        if settings.boolean("maillog_syslog"):
            syslog = SyslogSink(settings.text("syslog_facility"), syslog_address)
        scrub: Scrubber | None = None
        warning = ""
        privacy = settings.text("maillog_privacy")
        if privacy == "redact":
            scrub = Redactor()
        elif privacy == "pseudonymize":
            try:
                scrub = KeyedPseudonymizer(
                    Path(settings.text("data_directory")) / KEY_FILE,
                    rotation=settings.seconds("maillog_privacy_key_rotation"),
                    retention_days=settings.integer("maillog_retention_days"),
                    now=now,
                )
            except (OSError, ValueError) as exc:
                scrub = Redactor()
                warning = f"warning: maillog: no pseudonymisation key ({exc}); redacting instead"
        fmt = settings.text("maillog_format")
        log = cls(
            stream,
            hostname=hostname or settings.text("myhostname"),
            syslog_name=settings.text("syslog_name"),
            clock=clock,
            scrub=scrub,
            log_format="json" if fmt == "json" else "text",
            sinks=sinks,
            syslog=syslog,
        )
        if warning:
            log.emit("master", warning)
        return log

    def emit(self, service: str, text: str) -> None:
        """Log ``text`` as ``ironpost/<service>[pid]``. Control characters are escaped."""
        if not text.isprintable():
            text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
        now = self._clock()
        if now >= self._next_maintenance:  # before scrubbing: the key may rotate
            with self._lock:
                if now >= self._next_maintenance:
                    self._maintain(now)
        if self._scrub is not None:
            try:
                text = self._scrub(text)
            except Exception:  # a scrubber bug must not stop mail, nor leak the text
                text = "(log text withheld: privacy filter error)"
        tag = f"{self._name}/{service}"
        with self._lock:
            second = int(now)
            if second != self._stamp_second:
                self._stamp_second, self._stamp_text = second, _stamp(now)
            stamp = self._stamp_text
            if self._json:
                line = json_line(now, self._host, tag, self._pid, text)
            else:
                line = f"{stamp} {self._host} {tag}[{self._pid}]: {text}\n"
            for sink in self._sinks:
                sink.write(line)
            if self._syslog is not None:
                self._syslog.write(f"{stamp} {tag}[{self._pid}]: {text}")

    def maintain(self, now: float | None = None) -> None:
        """Rotate files and keys that are due (emit does this about once a minute)."""
        with self._lock:
            self._maintain(self._clock() if now is None else now)

    def _maintain(self, now: float) -> None:
        self._next_maintenance = now + _MAINTENANCE_INTERVAL
        parts: list[object] = [*self._sinks, self._scrub]
        for part in parts:
            if isinstance(part, (FileSink, KeyedPseudonymizer)):
                try:
                    part.maintain(now)
                except (OSError, ValueError):
                    pass  # retried at the next maintenance; the current file/key stay

    def flush(self) -> None:
        with self._lock:
            for sink in self._sinks:
                sink.flush()
            if self._syslog is not None:
                self._syslog.flush()

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
        with self._lock:
            for sink in self._sinks:
                sink.close()
            if self._syslog is not None:
                self._syslog.close()


def _fmt_delay(seconds: float) -> str:
    # Postfix: two significant digits below 10 s, whole seconds above.
    if seconds < 0.01:
        return "0"
    if seconds < 10:
        return f"{seconds:.2g}" if seconds < 1 else f"{seconds:.1f}"
    return f"{seconds:.0f}"
