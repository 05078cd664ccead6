"""Real remote peers on loopback: Postfix's smtp-sink, started per test.

``SmtpSink`` runs ``smtp-sink -v`` on its own 127.0.0.x address, dumping every message
to a directory, and reads its verbose output to tell what the client did: sessions
opened (connection reuse), the most sessions open at once (concurrency limits), and
the commands seen. Each xdist worker gets its own block of addresses, so several
sinks can each bind port 25.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SMTP_SINK = "/usr/sbin/smtp-sink"


def peer_address(n: int) -> str:
    """The n-th (0..9) peer address of this xdist worker: 127.0.0.{170 + 10*w + n}."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = "".join(c for c in worker if c.isdigit()) or "0"
    if not 0 <= n < 10:
        raise ValueError("peer index must be 0..9")
    return f"127.0.0.{170 + 10 * (int(digits) % 8) + n}"


class SmtpSink:
    def __init__(self, directory: Path, host: str, port: int, *options: str) -> None:
        self.dir = directory
        self.host = host
        self.port = port
        self.dumps = directory / "dumps"
        self.dumps.mkdir(parents=True, exist_ok=True)
        self.output = directory / "sink.log"
        self._log = open(self.output, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                SMTP_SINK,
                "-u",
                "root",  # it insists on dropping privileges; root can write the dumps
                "-v",
                "-d",
                f"{self.dumps}/%H%M%S.",
                *options,
                f"{host}:{port}",
                "64",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"smtp-sink exited: {self.output.read_text()}")
            try:
                with socket.create_connection((host, port), timeout=0.5) as s:
                    s.recv(100)
                    s.sendall(b"QUIT\r\n")
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"smtp-sink did not start on {host}:{port}")
        self._skip_sessions = 1  # the readiness probe above

    @property
    def nexthop(self) -> str:
        return f"[{self.host}]:{self.port}"

    def lines(self) -> list[str]:
        out = []
        for line in self.output.read_text(errors="replace").splitlines():
            _, sep, rest = line.partition("smtp-sink: ")
            out.append(rest if sep else line)
        return out

    def messages(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dumps.iterdir())]

    def wait_for_messages(self, count: int, timeout: float = 20.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"sink: expected {count} messages, have {len(self.messages())}")

    def sessions(self) -> int:
        """Client sessions opened (not counting our readiness probe)."""
        return sum(1 for line in self.lines() if line.startswith("connect")) - self._skip_sessions

    def max_concurrent(self) -> int:
        open_now = peak = 0
        for line in self.lines():
            if line.startswith("connect"):
                open_now += 1
                peak = max(peak, open_now)
            elif line.startswith("disconnect"):
                open_now -= 1
        return peak

    def commands(self, verb: str) -> list[str]:
        return [line for line in self.lines() if line.upper().startswith(verb.upper())]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[type[SinkFactory]]:
    started: list[SmtpSink] = []

    class Factory(SinkFactory):
        @staticmethod
        def start(n: int = 0, *options: str, port: int = 25) -> SmtpSink:
            sink = SmtpSink(tmp_path / f"sink{len(started)}", peer_address(n), port, *options)
            started.append(sink)
            return sink

    yield Factory
    for sink in started:
        sink.stop()


class SinkFactory:
    @staticmethod
    def start(n: int = 0, *options: str, port: int = 25) -> SmtpSink:
        raise NotImplementedError
