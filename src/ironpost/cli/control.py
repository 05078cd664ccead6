"""``ironpost stop | reload | status [-c DIR]``: control a running daemon by its pid file.

Owns the pid file, ``$queue_directory/pid/master.pid`` as in Postfix: one daemon per
queue, so the queue directory is where its pid belongs. The running daemon holds an
exclusive ``flock`` on the file for as long as it lives, so a pid file left behind
by a crash (kill -9, power loss) is recognised as stale: the kernel released the lock.
``stop`` sends SIGTERM and waits until the daemon has let go of the lock; ``reload``
checks the configuration first and sends SIGHUP only when it loads.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ironpost.cli.common import add_config_option, load_or_exit


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None) -> None:
        super().__init__(f"already running (pid {pid})" if pid else "already running")
        self.pid = pid


def pid_path(queue_directory: str | Path) -> Path:
    return Path(queue_directory) / "pid" / "master.pid"


class PidFile:
    """The daemon's side: take the lock, write the pid, remove the file at exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock and write our pid; AlreadyRunning when another daemon holds the lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        # A few tries: ``ironpost status`` takes a shared lock for an instant.
        for attempt in range(10):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 9:
                    os.close(fd)
                    raise AlreadyRunning(read_pid(self.path)) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)  # releases the lock
        self._fd = None


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(path: Path) -> int | None:
    """The pid of the daemon that holds ``path``'s lock, or None (no daemon, or a stale
    file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_pid(path) or None
        return None  # we got the lock: nobody holds it
    finally:
        os.close(fd)


def add_parser(sub: Any) -> None:
    for name, help_text, func in (
        ("stop", "stop the running MTA (SIGTERM), and wait until it has stopped", stop),
        ("reload", "re-read the configuration of the running MTA (SIGHUP)", reload),
        ("status", "say whether the MTA is running (exit 0) or not (exit 3)", status),
    ):
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        add_config_option(p)
        if name == "stop":
            p.add_argument(
                "--timeout",
                type=float,
                default=None,
                metavar="SECONDS",
                help="how long to wait (default: twice shutdown_timeout, plus 10 s)",
            )
        p.set_defaults(func=func)


def _pid_file(args: argparse.Namespace) -> tuple[Path, float]:
    settings = load_or_exit(args).settings
    return pid_path(settings.text("queue_directory")), settings.seconds("shutdown_timeout")


def status(args: argparse.Namespace) -> int:
    path, _ = _pid_file(args)
    pid = running_pid(path)
    if pid is None:
        print("ironpost: the mail system is not running", file=sys.stderr)
        return 3  # LSB: program is not running
    print(f"ironpost: the mail system is running: PID: {pid}", file=sys.stderr)
    return 0


def reload(args: argparse.Namespace) -> int:
    path, _ = _pid_file(args)  # loading the configuration is the check: errors exit 1
    pid = running_pid(path)
    if pid is None:
        print("ironpost: fatal: the mail system is not running", file=sys.stderr)
        return 1
    os.kill(pid, signal.SIGHUP)
    print(f"ironpost: refreshing the mail system (pid {pid})", file=sys.stderr)
    return 0


def stop(args: argparse.Namespace) -> int:
    path, shutdown_timeout = _pid_file(args)
    pid = running_pid(path)
    if pid is None:
        print("ironpost: fatal: the mail system is not running", file=sys.stderr)
        return 1
    print(f"ironpost: stopping the mail system (pid {pid})", file=sys.stderr)
    os.kill(pid, signal.SIGTERM)
    timeout = args.timeout if args.timeout is not None else 2 * shutdown_timeout + 10
    deadline = time.monotonic() + timeout
    while running_pid(path) is not None:
        if time.monotonic() > deadline:
            print(f"ironpost: fatal: pid {pid} still running after {timeout:g}s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print("ironpost: the mail system has stopped", file=sys.stderr)
    return 0
