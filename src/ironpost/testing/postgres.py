"""A throwaway PostgreSQL server for tests and benchmarks: Debian's binaries, our own data
directory, loopback only.

Owns :class:`PostgresServer`: ``initdb`` into a directory, ``pg_ctl start`` on a loopback
address and port (and a unix socket inside the directory), databases created on demand,
and the stop, crash (SIGKILL of the postmaster) and restart that the cluster tests need.

PostgreSQL refuses to run as root, so when we are root the server runs as the
``postgres`` user that Debian's package creates (else ``nobody``), and the directory is
handed to that user. Authentication is ``trust`` on loopback: the server is private to
one test run and listens nowhere else.

Invariants: nothing here touches a system cluster (``/var/lib/postgresql``) or any
address outside 127.0.0.0/8; :meth:`PostgresServer.stop` leaves no process behind.
``fsync`` is on unless the caller turns it off (tests do, for speed: a PostgreSQL that
is killed loses nothing with fsync off, only an OS crash would).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

_SUPERUSER = "ironpost"


def postgres_bin_dir() -> Path | None:
    """Debian's versioned binary directory (the newest), or None when not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version_key(path: str) -> tuple[int, ...]:
    part = path.split("/")[4]
    return tuple(int(x) for x in part.split(".") if x.isdigit())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """The user to run PostgreSQL as: None means ourselves (we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL")


class PostgresServer:
    """One PostgreSQL instance in ``directory`` (created if needed), on ``host:port``.

    Without a directory, a fresh one under the system temp dir is made (and removed by
    :meth:`cleanup`): when we are root the server runs as another user, who must be able
    to reach the directory, which a test's private tmp_path does not allow."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        fsync: bool = True,
        max_connections: int = 200,
    ) -> None:
        bindir = postgres_bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self._own_directory = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="ironpost-pg-"))
            directory.chmod(0o755)
        self.directory = Path(directory)
        self.data = self.directory / "data"
        self.host = host
        self.port = port or free_port(host)
        self.fsync = fsync
        self.max_connections = max_connections
        self.user = _run_as()

    # -- life ---------------------------------------------------------------------------

    def _cmd(self, *argv: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, user=self.user, cwd="/", capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(argv[0]).name} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()}\n{self.log_tail()}"
            )
        return done

    def init(self) -> None:
        """``initdb`` once (a directory that already holds a cluster is kept)."""
        if (self.data / "PG_VERSION").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._cmd(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.directory}'",
            "fsync": "on" if self.fsync else "off",
            "max_connections": str(self.max_connections),
            "shared_buffers": "64MB",
            "logging_collector": "off",
        }
        with (self.data / "postgresql.auto.conf").open("a") as f:
            for name, value in settings.items():
                f.write(f"{name} = {value}\n")

    def start(self) -> None:
        self.init()
        self._cmd(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode`` (smart, fast or immediate); quiet if not running."""
        if self.pid() is None:
            return
        self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def crash(self) -> None:
        """SIGKILL the postmaster and every backend, as a machine losing power would;
        :meth:`start` then runs crash recovery."""
        pid = self.pid()
        if pid is None:
            return
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(Path(f"/proc/{v}").exists() for v in victims):
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pid(self) -> int | None:
        try:
            text = (self.data / "postmaster.pid").read_text()
        except FileNotFoundError:
            return None
        try:
            pid = int(text.split()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            return None
        return pid

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop("immediate")
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the directory if this object made it (the server must be stopped)."""
        if self._own_directory and self.pid() is None:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- databases ----------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (dropping an old one) and return its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(
                (self.directory / "server.log").read_text(errors="replace").splitlines()[-lines:]
            )
        except FileNotFoundError:
            return ""


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (PostgreSQL's backends and helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            if (entry / "stat").read_text().rsplit(") ", 1)[1].split()[1] == str(pid):
                found.append(int(entry.name))
    return found
