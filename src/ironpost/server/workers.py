"""SMTP worker processes (``ironpost_workers`` > 1): listening sockets shared through
SO_REUSEPORT, and the master's supervision of the workers.

Roles: the **master** is the one queue authority. It alone recovers the active queue at
start, runs the queue manager (claims, deliveries), the trigger socket and the metrics
endpoint, and serves no SMTP (its deliveries would slow its share of the sessions, and
the kernel gives every socket the same share). Each **worker** serves SMTP only: it opens its own
connection to the queue database, commits through its own group-commit writer (SQLite
serialises the writers; the busy timeout absorbs the waits) and, after a commit, pokes
the master through the trigger socket (:class:`MasterPoke`) instead of waking a queue
manager of its own.

How a worker comes to life: before any event loop runs, the master binds every listener
once per worker with SO_REUSEPORT (:func:`bind_sets`), so the kernel spreads incoming
connections over the workers. A worker is a fresh interpreter
(``ironpost run --worker-of PID --listen-fds JSON``) started with ``pass_fds`` carrying
only its own set of sockets: nothing else of the master (its SQLite connection, its
threads, its event loop) crosses into it. The same path serves the first start (the
master is still root; the worker drops privileges itself, after it has its sockets and
before it serves) and a restart (the master has dropped already; so is the worker). A
``fork()`` without ``exec`` could not restart a worker: by then the master has a running
uvloop loop and threads (the group-commit writer, metrics), which fork does not support.

Invariants:

- the master keeps every worker's sockets open for the worker's whole life and beyond:
  connections the kernel queued on a dead worker's socket wait in its backlog for the
  restarted worker instead of being reset;
- a worker dies with its master: PR_SET_PDEATHSIG (set again after the privilege drop,
  which clears it) plus a check of the parent pid for a master that died before that;
- a worker that exits while the master is not stopping is logged Postfix-style
  (``warning: process ironpost/smtpd pid N exit status S``) and restarted after a delay
  that grows while it keeps dying young;
- SIGTERM/SIGINT and SIGHUP reach every worker; at stop the master waits for them
  (each drains its sessions within ``shutdown_timeout``) and kills what is left after it.

Per-process state (say so wherever it shows): anvil (rates, AUTH bans), the connection
counters and the smtpd metrics counters are each process's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ironpost.queue.trigger import notify

#: A listening address: (host, port).
Bind = tuple[str, int]
#: One process's listening sockets, per bind (a host may resolve to several addresses).
SocketSet = dict[Bind, list[socket.socket]]

MAX_WORKERS = 64
_BACKLOG = 1024
_PR_SET_PDEATHSIG = 1
_RESTART_DELAY = 1.0  # first restart of a worker that died
_RESTART_DELAY_MAX = 30.0
_YOUNG = 10.0  # a worker that dies younger than this doubles the next delay
_POLL = 0.25  # seconds between checks of the workers' state


def resolve_workers(requested: int) -> int:
    """``ironpost_workers`` / ``--workers``: 0 means one process per usable CPU."""
    if requested < 0 or requested > MAX_WORKERS:
        raise ValueError(f"workers must be 0..{MAX_WORKERS}, not {requested}")
    if requested:
        return requested
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


# -- sockets ---------------------------------------------------------------------------


def bind_reuseport(host: str, port: int, *, backlog: int = _BACKLOG) -> list[socket.socket]:
    """Listening sockets for ``host:port`` with SO_REUSEPORT (one per address the host
    resolves to, as asyncio's create_server binds them). Raises OSError."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # As asyncio does: a v6 socket must not also claim the v4 port.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sockets


def bind_sets(binds: Sequence[Bind], processes: int) -> list[SocketSet]:
    """``processes`` sets of listening sockets, one per process, all on the same ports."""
    sets: list[SocketSet] = [{} for _ in range(processes)]
    try:
        for bind in binds:
            for one in sets:
                one[bind] = bind_reuseport(*bind)
    except OSError:
        close_sets(sets)
        raise
    return sets


def close_sets(sets: Sequence[SocketSet]) -> None:
    for one in sets:
        for sockets in one.values():
            for sock in sockets:
                sock.close()


def encode_fds(sockets: SocketSet) -> str:
    """The ``--listen-fds`` argument: ``[[host, port, [fd, ...]], ...]`` as JSON."""
    return json.dumps([[h, p, [s.fileno() for s in socks]] for (h, p), socks in sockets.items()])


def decode_fds(text: str) -> SocketSet:
    """The inherited sockets named by :func:`encode_fds`. Raises ValueError."""
    try:
        rows = json.loads(text)
        out: SocketSet = {}
        for host, port, fds in rows:
            out[(str(host), int(port))] = [socket.socket(fileno=int(fd)) for fd in fds]
    except (TypeError, ValueError, OSError) as exc:
        raise ValueError(f"bad --listen-fds {text!r}: {exc}") from None
    for socks in out.values():
        for sock in socks:
            sock.setblocking(False)
    return out


# -- dying with the master ---------------------------------------------------------------


def die_with_master(master_pid: int) -> bool:
    """Ask the kernel for SIGTERM when the parent dies (Linux). Call it again after a
    privilege drop, which clears the setting. False when the master is already gone."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    # The master may have died before the prctl: we were then re-parented.
    return os.getppid() == master_pid


class MasterPoke:
    """A worker's ``on_queued``: one trigger datagram per loop iteration however many
    commits it covers (the master's queue manager scans once per wake-up anyway)."""

    def __init__(self, queue_directory: Path) -> None:
        self._queue_directory = queue_directory
        self._pending = False

    def __call__(self, _queue_id: str) -> None:
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._pending = False
        notify(self._queue_directory)  # never blocks, never raises


# -- the master's side ------------------------------------------------------------------


@dataclass
class _Worker:
    slot: int
    sockets: SocketSet
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = _RESTART_DELAY
    restart_at: float | None = None  # monotonic time of the next start, when dead
    exits: list[int] = field(default_factory=list)


class WorkerPool:
    """The master's workers: start, watch, restart, forward signals, stop.

    ``command(fds)`` is the worker's argv for its ``--listen-fds`` argument; ``log``
    writes a master log line. All methods run on the master's loop thread (or before
    the loop starts)."""

    def __init__(
        self,
        sets: Sequence[SocketSet],
        command: Callable[[str], list[str]],
        log: Callable[[str], None],
    ) -> None:
        self._workers = [_Worker(slot, sockets) for slot, sockets in enumerate(sets, 1)]
        self._command = command
        self._log = log
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None]

    def start(self) -> None:
        for worker in self._workers:
            self._spawn(worker)

    def _spawn(self, worker: _Worker) -> None:
        fds = [s.fileno() for socks in worker.sockets.values() for s in socks]
        worker.restart_at = None
        try:
            worker.proc = subprocess.Popen(
                self._command(encode_fds(worker.sockets)), pass_fds=fds, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            worker.proc = None
            # E.g. the interpreter is not executable by mail_owner (after the drop).
            self._log(f"warning: cannot start worker {worker.slot}: {exc}")
            self._schedule_restart(worker, time.monotonic())
            return
        worker.started = time.monotonic()
        self._log(f"worker {worker.slot} started: pid {worker.proc.pid}")

    def _schedule_restart(self, worker: _Worker, now: float) -> float:
        """When to start ``worker`` again: after _RESTART_DELAY, doubled (up to
        _RESTART_DELAY_MAX) each time it died young, so a worker that cannot start
        does not spin. Returns the wait."""
        if now - worker.started >= _YOUNG:
            worker.delay = _RESTART_DELAY
        wait = worker.delay
        worker.restart_at = now + wait
        worker.delay = min(wait * 2, _RESTART_DELAY_MAX)
        return wait

    def check(self, now: float | None = None) -> None:
        """Reap the workers that exited and restart those due (called every _POLL s)."""
        now = time.monotonic() if now is None else now
        for worker in self._workers:
            proc = worker.proc
            if proc is not None and proc.poll() is not None:
                worker.proc = None
                worker.exits.append(proc.returncode)
                if self._stopping:
                    continue
                self._log(f"warning: {_describe_exit(proc.pid, proc.returncode)}")
                wait = self._schedule_restart(worker, now)
                self._log(f"warning: restarting worker {worker.slot} in {wait:g}s")
            elif (
                proc is None
                and worker.restart_at is not None
                and now >= worker.restart_at
                and not self._stopping
            ):
                self._spawn(worker)

    async def supervise(self) -> None:
        while not self._stopping:
            self.check()
            await asyncio.sleep(_POLL)

    def forget(self, bind: Bind) -> None:
        """A reload dropped ``bind``: close the workers' sockets for it that we keep
        (else the kernel would go on queueing connections on them), and do not hand
        them to restarted workers."""
        for worker in self._workers:
            for sock in worker.sockets.pop(bind, []):
                sock.close()

    def signal(self, sig: int) -> None:
        for worker in self._workers:
            if worker.proc is not None and worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(sig)

    async def stop(self, sig: int, timeout: float) -> None:
        """Forward ``sig`` (SIGTERM or SIGINT), wait up to ``timeout`` for every worker,
        SIGKILL the rest, and close the sockets kept for restarts."""
        self._stopping = True
        self.signal(sig)
        deadline = time.monotonic() + timeout
        while any(w.proc is not None and w.proc.poll() is None for w in self._workers):
            if time.monotonic() >= deadline:
                for worker in self._workers:
                    if worker.proc is not None and worker.proc.poll() is None:
                        self._log(f"warning: worker pid {worker.proc.pid} did not stop: killed")
                        worker.proc.kill()
                        worker.proc.wait()
                break
            await asyncio.sleep(0.05)
        close_sets([w.sockets for w in self._workers])


def _describe_exit(pid: int, status: int) -> str:
    """Postfix's wording for a child that ended (Popen: negative status = signal)."""
    if status < 0:
        return f"process ironpost/smtpd pid {pid} killed by signal {-status}"
    return f"process ironpost/smtpd pid {pid} exit status {status}"
