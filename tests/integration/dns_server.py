"""A real DNS server on loopback (dnsmasq) serving zones that a test writes.

``dns_server(records)`` starts ``/usr/sbin/dnsmasq`` on its own 127.0.0.x address
(derived from the xdist worker) and a free port, answering only from the records
given, in the zone format of ``ironpost.testing.dns`` (MX, A, AAAA, TXT, PTR; the
null MX is ``(0, ".")``). It never reads /etc/resolv.conf or /etc/hosts and never
forwards outside loopback. Names that are not listed are NXDOMAIN (dnsmasq
``local=``), names listed without the asked type are NODATA. Two failure domains
are built in:

- ``*.servfail.test`` is forwarded to a loopback upstream that answers SERVFAIL
  (dnsmasq relays it; dnsmasq alone cannot produce a SERVFAIL for local data);
- ``*.timeout.test`` is forwarded to a loopback UDP socket that never answers, so
  the client times out. ``server.blackhole`` is that socket as a nameserver.

What dnsmasq does on its own that a test may notice: A/AAAA records come from
``host-record=``, which also publishes the matching PTR records; one TXT record is
limited to about 900 characters (dnsmasq's config line length); the answers carry
no SOA, so negative answers have no negative TTL.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from ironpost.testing.dns import zone_key

DNSMASQ = "/usr/sbin/dnsmasq"
SERVFAIL_DOMAIN = "servfail.test"
TIMEOUT_DOMAIN = "timeout.test"
ALWAYS_LOCAL = ("test", "in-addr.arpa", "ip6.arpa")
MAX_LINE = 900  # dnsmasq reads config lines into a buffer of about 1 KiB

Records = Mapping[str, Mapping[str, Sequence[Any]]]


def worker_address() -> str:
    """127.0.0.150 for xdist worker gw0, .151 for gw1, ... (.150 without xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = "".join(c for c in worker if c.isdigit()) or "0"
    return f"127.0.0.{150 + int(digits) % 100}"


def free_port(address: str) -> int:
    """A port free for both UDP and TCP on ``address``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free UDP+TCP port on {address}")


class _ServfailUpstream:
    """A UDP server answering SERVFAIL to every query (dnsmasq's upstream)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            reply = dns.message.make_response(query)
            reply.set_rcode(dns.rcode.SERVFAIL)
            with contextlib.suppress(OSError):
                self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def _txt_line(name: str, record: Any) -> str:
    strings = [record] if isinstance(record, str) else list(record)
    chunks: list[str] = []
    for s in strings:
        # One character-string holds at most 255 octets.
        chunks.extend([s[i : i + 255] for i in range(0, len(s), 255)] or [""])
    quoted = ",".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)
    return f"txt-record={name},{quoted}"


def render_records(records: Records) -> list[str]:
    """dnsmasq config lines for ``records`` (raises ValueError for what it cannot serve)."""
    lines: list[str] = []
    for owner, rrsets in records.items():
        name = zone_key(owner)
        for rtype, values in rrsets.items():
            rtype = rtype.upper()
            values = [values] if isinstance(values, str) else values
            for value in values:
                if rtype == "MX":
                    preference, host = value
                    host = str(host).rstrip(".") or "."
                    lines.append(f"mx-host={name},{host},{int(preference)}")
                elif rtype in ("A", "AAAA"):
                    lines.append(f"host-record={name},{value}")
                elif rtype == "TXT":
                    lines.append(_txt_line(name, value))
                elif rtype == "PTR":
                    lines.append(f"ptr-record={name},{str(value).rstrip('.')}")
                else:
                    raise ValueError(f"dns_server cannot serve {rtype} records")
    for line in lines:
        if len(line) > MAX_LINE or "\n" in line:
            raise ValueError(f"record too long for dnsmasq: {line[:60]}...")
    return lines


@dataclass
class DnsServer:
    address: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    blackhole_port: int
    _upstream: _ServfailUpstream
    _blackhole: socket.socket
    _stopped: bool = field(default=False)

    @property
    def nameserver(self) -> str:
        """``address:port``, the form ``dns_nameservers`` and ``DnsResolver`` take."""
        return f"{self.address}:{self.port}"

    @property
    def blackhole(self) -> str:
        """A nameserver (``address:port``) that receives queries and never answers."""
        return f"{self.address}:{self.blackhole_port}"

    @property
    def log(self) -> str:
        path = self.directory / "dnsmasq.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def queries(self) -> list[str]:
        """The queries dnsmasq received, as ``"TYPE name"``, in order."""
        out = []
        for line in self.log.splitlines():
            start = line.find(" query[")
            if start < 0:
                continue
            rest = line[start + 7 :]
            rtype, _, rest = rest.partition("] ")
            out.append(f"{rtype} {rest.split(' ', 1)[0]}")
        return out

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._upstream.close()
        self._blackhole.close()


def _wait_ready(address: str, port: int, process: subprocess.Popen[bytes]) -> bool:
    query = dns.message.make_query("ready.test", "SOA")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            dns.query.udp(query, address, port=port, timeout=0.2)
            return True
        except (dns.exception.Timeout, OSError):
            time.sleep(0.05)
    return False


def start_dns_server(
    records: Records,
    directory: Path,
    *,
    address: str | None = None,
    local_domains: Sequence[str] = (),
    ttl: int = 300,
) -> DnsServer:
    """Start dnsmasq serving ``records`` (answers carry ``ttl``); see the module doc."""
    address = address or worker_address()
    directory.mkdir(parents=True, exist_ok=True)
    lines = render_records(records)
    local = set(ALWAYS_LOCAL) | {zone_key(d) for d in local_domains}
    local |= {zone_key(owner).rsplit(".", 1)[-1] for owner in records}
    upstream = _ServfailUpstream(address)
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blackhole.bind((address, 0))
    blackhole_port = int(blackhole.getsockname()[1])
    base = [
        "no-resolv",
        "no-hosts",
        "keep-in-foreground",
        "bind-interfaces",
        f"listen-address={address}",
        "pid-file=",
        "cache-size=0",  # every answer comes from the zone or the upstream, now
        "no-negcache",
        f"local-ttl={ttl}",
        "log-queries",
        f"log-facility={directory / 'dnsmasq.log'}",
        *(f"local=/{d}/" for d in sorted(local)),
        f"server=/{SERVFAIL_DOMAIN}/{address}#{upstream.port}",
        f"server=/{TIMEOUT_DOMAIN}/{address}#{blackhole_port}",
        *lines,
    ]
    if os.geteuid() == 0:
        base.append("user=root")  # stay root: dropping to nobody cannot write our log
    errors = ""
    for _attempt in range(3):
        port = free_port(address)
        conf = directory / "dnsmasq.conf"
        conf.write_text("\n".join([f"port={port}", *base]) + "\n")
        stderr = directory / "dnsmasq.stderr"
        with stderr.open("wb") as err:
            process = subprocess.Popen(
                [DNSMASQ, f"--conf-file={conf}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        if _wait_ready(address, port, process):
            return DnsServer(address, port, directory, process, blackhole_port, upstream, blackhole)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)
        errors = stderr.read_text(errors="replace")
        if "in use" not in errors:
            break
    upstream.close()
    blackhole.close()
    raise RuntimeError(f"dnsmasq did not start on {address}: {errors.strip()}")


@pytest.fixture
def dns_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., DnsServer]]:
    """Factory: ``server = dns_server(records, **options)``; stopped after the test."""
    servers: list[DnsServer] = []

    def start(records: Records | None = None, **options: Any) -> DnsServer:
        server = start_dns_server(records or {}, tmp_path_factory.mktemp("dns"), **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
