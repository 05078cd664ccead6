"""The wake-up trigger: a unix datagram socket through which local tools poke the server.

Postfix's ``public/qmgr`` and ``public/pickup`` fifos, as ``<queue_directory>/public/qmgr``.
The server listens (:class:`TriggerListener`); ``ironpost queue flush/requeue/release``
and ``sendmail`` call :func:`notify` after their database change, so the change takes
effect now instead of at the server's next poll.

Protocol: each datagram is one request of exactly one byte: ``b"W"`` (wake up: mail is
new or due) or ``b"F"`` (flush: as W, and forget what was learnt about dead
destinations, as Postfix's qmgr does on ``postqueue -f``). Anything else is ignored.

Permissions follow Postfix's ``public/pickup``: the directory ``public`` is created mode
0710 and the socket is mode 0622, so the socket is writable by whoever can reach it and
the directory decides who can (the owner, plus the group the administrator gives it, as
Postfix's ``postdrop`` group). A request can only ask for work the server does anyway at
its next poll, so the worst a poking user achieves is an earlier queue scan.

Invariants:
- :meth:`TriggerListener.start` never fails because of the file system (missing or
  read-only directory, a path too long for ``AF_UNIX``, a non-socket in the way): it
  logs and returns an inactive listener, and the server keeps working on its poll
  interval alone;
- bad datagrams and a failing ``on_wake`` never raise into the event loop; one readiness
  callback reads a bounded number of datagrams, so a flood cannot starve the loop;
- :func:`notify` never blocks and never raises for a missing or busy server;
- :meth:`TriggerListener.close` removes the socket file only if it is still the one it
  bound (a newer server's socket is left alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

WAKE = b"W"
FLUSH = b"F"
REQUESTS = frozenset({WAKE, FLUSH})
PUBLIC_DIR = "public"
TRIGGER_NAME = "qmgr"
PUBLIC_MODE = 0o710
SOCKET_MODE = 0o622
_MAX_DATAGRAM = 64  # anything longer is not a request; read and drop it
_DRAIN = 256  # datagrams per readiness callback

_logger = logging.getLogger(__name__)


def trigger_path(queue_directory: Path | str) -> Path:
    return Path(queue_directory) / PUBLIC_DIR / TRIGGER_NAME


def _default_log(text: str) -> None:
    _logger.warning("%s", text)


class TriggerListener:
    """Receives wake-up datagrams on an event loop and calls ``on_wake(request)``.

    ``on_wake`` runs on the loop, once per valid datagram; keep it cheap (set an
    ``asyncio.Event``): a burst of pokes should coalesce into one queue scan."""

    def __init__(
        self,
        path: Path,
        on_wake: Callable[[bytes], None],
        log: Callable[[str], None],
        sock: socket.socket | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.path = path
        self._on_wake = on_wake
        self._log = log
        self._sock = sock
        self._loop = loop
        self._identity: tuple[int, int] | None = None
        self.received = 0  # valid requests seen (for tests and diagnostics)
        self.ignored = 0

    @classmethod
    async def start(
        cls,
        path: Path | str,
        on_wake: Callable[[bytes], None],
        *,
        log: Callable[[str], None] | None = None,
    ) -> TriggerListener:
        """Listen on ``path`` (its directory is created mode 0710 if missing; a stale
        socket there is removed). Never raises for file-system trouble: see
        :attr:`active`."""
        listener = cls(Path(path), on_wake, log or _default_log)
        listener._open(asyncio.get_running_loop())
        return listener

    @property
    def active(self) -> bool:
        return self._sock is not None

    def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        path = self.path
        sock: socket.socket | None = None
        try:
            directory = path.parent
            if not directory.exists():
                directory.mkdir(mode=PUBLIC_MODE)
                directory.chmod(PUBLIC_MODE)  # mkdir's mode is filtered by the umask
            with contextlib.suppress(FileNotFoundError):
                st = path.lstat()
                if not stat.S_ISSOCK(st.st_mode):
                    raise OSError(f"{path} exists and is not a socket; not removing it")
                path.unlink()  # stale: left by a server that did not shut down cleanly
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(str(path))
            os.chmod(path, SOCKET_MODE)
            st = path.lstat()
            self._identity = (st.st_dev, st.st_ino)
            loop.add_reader(sock.fileno(), self._readable)
        except OSError as exc:
            if sock is not None:
                sock.close()
            self._log(f"wake-up trigger {path} unavailable, relying on polling: {exc}")
            return
        self._sock = sock
        self._loop = loop

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(_DRAIN):
            try:
                data = sock.recv(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._log(f"wake-up trigger {self.path}: receive failed: {exc}")
                return
            if data not in REQUESTS:
                self.ignored += 1
                continue
            self.received += 1
            try:
                self._on_wake(data)
            except Exception as exc:  # a bug in the callback must not kill the listener
                self._log(f"wake-up trigger {self.path}: handler failed: {exc!r}")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()
        with contextlib.suppress(OSError):
            st = self.path.lstat()
            if (st.st_dev, st.st_ino) == self._identity:
                self.path.unlink()


def notify(queue_directory: Path | str, what: bytes = WAKE) -> bool:
    """Poke the server of ``queue_directory``; True if a listener took (or already has
    pending) the request, False if none is listening. Never blocks."""
    if what not in REQUESTS:
        raise ValueError(f"unknown trigger request {what!r}")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(what, str(trigger_path(queue_directory)))
    except BlockingIOError:
        return True  # its receive buffer is full of requests: a wake-up is pending anyway
    except OSError:
        return False  # no socket, nobody bound to it, no permission, path too long
    return True
