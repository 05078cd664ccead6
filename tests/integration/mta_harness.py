"""A real ironpost on loopback, for tests that talk to it through real sockets.

``mta`` starts ``ironpost run -c DIR`` as a subprocess with a main.cf written by the
test, on 127.0.0.1 and a free port, and stops it afterwards. Clients in
``$mynetworks`` are 127.0.0.1 only; a test that wants a stranger binds its client
socket to another loopback address (``STRANGER``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from null_dns import null_dns

ROOT = Path(__file__).resolve().parents[2]
IRONPOST = [sys.executable, "-m", "ironpost"]
HOST = "127.0.0.1"
STRANGER = "127.0.0.66"
DOMAIN = "example.test"

BASE_MAIN_CF = """\
myhostname = mail.example.test
mydomain = example.test
myorigin = $mydomain
mydestination = localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
virtual_mailbox_domains = example.test
virtual_mailbox_maps = inline:{ alice@example.test=example.test/alice/,
    bob@example.test=example.test/bob/, postmaster@example.test=example.test/postmaster/ }
virtual_alias_maps = inline:{ { team@example.test = alice@example.test, bob@example.test },
    abuse@example.test=postmaster@example.test, far@example.test=someone@remote.test }
virtual_mailbox_base = {data}/mail
queue_directory = {data}/queue
data_directory = {data}
maillog_file = {data}/maillog
recipient_delimiter = +
smtpd_greet_pause = 0s
# The tests run as root and read what the server writes under pytest's 0700 tmp dirs:
# the server stays root here (test_lifecycle.py covers the real drop to mail_owner).
mail_owner = root
ironpost_allow_root = yes
shutdown_timeout = 5s
# Tests never query a resolver outside loopback: a loopback server answers NXDOMAIN to
# everything (null_dns.py), unless the test points dns_nameservers at its own zones.
dns_nameservers = {nulldns}
# Tests read addresses in the log; privacy (pseudonymised by default) has its own tests.
maillog_privacy = off
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Mta:
    dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    extra_ports: dict[str, int] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def maillog(self) -> str:
        path = self.data / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_has(self, *texts: str, timeout: float = 5.0) -> bool:
        """Wait until every one of ``texts`` is in the maillog (it is flushed ~10x/s)."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.maillog
            if all(t in log for t in texts):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def maildir(self, user: str) -> Path:
        return self.data / "mail" / DOMAIN / user

    def messages(self, user: str) -> list[bytes]:
        new = self.maildir(user) / "new"
        if not new.exists():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir())]

    def wait_for_messages(self, user: str, count: int, timeout: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(user)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{user}: expected {count} messages, have {len(self.messages(user))}")

    def cli(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*IRONPOST, *args, "-c", str(self.dir)],
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=30,
            env=_env(),
        )

    def start(self) -> None:
        log = open(self.dir / "stderr.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [*IRONPOST, "run", "-c", str(self.dir)],
            stdout=log,
            stderr=log,
            env=_env(),
        )
        wait_listening(HOST, self.port, self.process, self.dir / "stderr.log")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src")
    env.pop("MAIL_CONFIG", None)
    return env


def wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ironpost exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.settimeout(3)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"ironpost did not start listening on {host}:{port}:\n{log.read_text()}")


def write_config(directory: Path, main_extra: str = "", master: str | None = None) -> int:
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    main = BASE_MAIN_CF.replace("{data}", str(data)).replace("{nulldns}", null_dns())
    main += textwrap.dedent(main_extra)
    (directory / "main.cf").write_text(main)
    if master is None:
        master = f"{HOST}:{port} inet n - n - - smtpd\n"
    (directory / "master.cf").write_text(master.replace("{port}", str(port)))
    return port


@pytest.fixture
def mta_factory(tmp_path: Path) -> Iterator[type[MtaFactory]]:
    started: list[Mta] = []

    class Factory(MtaFactory):
        @staticmethod
        def start(main_extra: str = "", master: str | None = None) -> Mta:
            directory = tmp_path / f"mta{len(started)}"
            directory.mkdir()
            port = write_config(directory, main_extra, master)
            mta = Mta(directory, port)
            mta.start()
            started.append(mta)
            return mta

    yield Factory
    for mta in started:
        mta.stop()


class MtaFactory:
    @staticmethod
    def start(main_extra: str = "", master: str | None = None) -> Mta:
        raise NotImplementedError


@pytest.fixture
def mta(mta_factory: type[MtaFactory]) -> Mta:
    return mta_factory.start()


class RawClient:
    """A line-level SMTP client for bad input that smtplib refuses to send."""

    def __init__(self, port: int, source: str = HOST, greet: bool = True) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10, source_address=(source, 0))
        self.buf = b""
        if greet:
            assert self.reply().startswith(b"220")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One whole (possibly multi-line) reply, or b"" at EOF."""
        while True:
            lines = self.buf.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if len(line) >= 4 and line[3:4] == b" ":
                    out = b"\r\n".join(lines[: i + 1])
                    self.buf = b"\r\n".join(lines[i + 1 :])
                    return out
            chunk = self.sock.recv(65536)
            if not chunk:
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk

    def cmd(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()
