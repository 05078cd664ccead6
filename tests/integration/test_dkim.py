"""DKIM against an implementation we did not write: OpenDKIM (libopendkim 2.11).

Our signatures are verified by ``opendkim-testmsg``, and OpenDKIM's signatures (with a
key from ``opendkim-genkey``) by ours, with the keys published by a real DNS server on
loopback (dnsmasq, the ``dns_server`` fixture). ``opendkim-testkey`` checks that the
record ``ironpost dkim keygen`` writes matches its private key.

opendkim-testkey resolves with libunbound, pointed at the server by an unbound
forward-zone (``addr@port``) with unbound's built-in refusal of ``test.`` lifted.
opendkim-testmsg asks the system resolver, which reads /etc/resolv.conf and only ever uses
port 53; it has no nameserver option. So each OpenDKIM tool runs in its own mount
namespace (``unshare -m``) where /etc/resolv.conf is bind-mounted to a file naming
127.0.0.x, and a small UDP relay on 127.0.0.x:53 forwards to the fixture's server.
Nothing outside the namespace sees the changed resolv.conf. 2048-bit keys keep every
answer under 512 octets, so the relay needs no TCP.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dns_server import DNSMASQ, DnsServer, dns_server  # noqa: F401  (fixture)

from ironpost.auth.dkim_keys import SigningKey, generate_key, key_from_file, txt_record
from ironpost.auth.dkim_sign import DkimSigner
from ironpost.auth.dkim_verify import verify_dkim
from ironpost.auth.dnsbridge import BlockingDns
from ironpost.dns import DnsResolver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(DNSMASQ).exists(), reason="dnsmasq is not installed"),
    pytest.mark.skipif(
        shutil.which("opendkim-testmsg") is None, reason="opendkim-tools is not installed"
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="unshare -m and port 53 need root"),
]

MSG = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: independent check\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <opendkim-1@example.test>\r\n"
    b"\r\n"
    b"Hello Bob,  \r\n\r\nthis is   signed.\r\n"
)


class Relay:
    """DNS on ``address``:53 (UDP and TCP), relayed to the test's DNS server."""

    def __init__(self, address: str, upstream: tuple[str, int]) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((address, 53))
        self.udp.settimeout(0.2)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((address, 53))
        self.tcp.listen(8)
        self.tcp.settimeout(0.2)
        self.upstream = upstream
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.udp.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.settimeout(2)
                try:
                    up.sendto(data, self.upstream)
                    answer, _ = up.recvfrom(65535)
                    self.udp.sendto(answer, peer)
                except OSError:
                    continue

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except (TimeoutError, OSError):
                continue
            with conn, socket.create_connection(self.upstream, timeout=2) as up:
                conn.settimeout(2)
                try:
                    while data := conn.recv(65535):
                        up.sendall(data)
                        conn.sendall(up.recv(65535))
                except OSError:
                    continue

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self.udp.close()
        self.tcp.close()


def relay_address() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = "".join(c for c in worker if c.isdigit()) or "0"
    return f"127.0.0.{60 + int(digits) % 40}"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SigningKey]:
    d = tmp_path_factory.mktemp("keys")
    theirs = d / "theirs"
    theirs.mkdir()
    subprocess.run(
        ["opendkim-genkey", "-D", str(theirs), "-d", "example.test", "-s", "od"],
        check=True,
        capture_output=True,
    )
    return {
        "rsa": generate_key(d / "ours", "example.test", "ip"),
        "ed": generate_key(d / "ours", "example.test", "iped", ed25519=True),
        "opendkim": key_from_file("example.test", "od", theirs / "od.private")[0],
    }


@pytest.fixture
def world(
    dns_server,  # noqa: F811
    keys: dict[str, SigningKey],
    tmp_path: Path,
) -> Iterator[tuple[DnsServer, Path]]:
    records = {k.dns_name: {"TXT": [txt_record(k)]} for k in keys.values()}
    records["revoked._domainkey.example.test"] = {"TXT": ["v=DKIM1; k=rsa; p="]}
    server = dns_server(records)
    address = relay_address()
    try:
        relay = Relay(address, (server.address, server.port))
    except OSError as exc:
        pytest.skip(f"cannot bind {address}:53: {exc}")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {address}\noptions timeout:2 attempts:2\n")
    yield server, resolv
    relay.close()


def in_namespace(resolv: Path, argv: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    """``argv`` with /etc/resolv.conf replaced by ``resolv``, in a private mount namespace."""
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, str(resolv), *argv],
        input=stdin,
        capture_output=True,
        timeout=30,
    )
    if b"mount" in result.stderr and b"permission" in result.stderr.lower():
        pytest.skip("mount namespaces are not available here")
    return result


def ours(*keys: SigningKey) -> DkimSigner:
    return DkimSigner(
        {"example.test": [key_from_file(k.domain, k.selector, k.private_path) for k in keys]}
    )


@pytest.mark.parametrize("kind", ["rsa", "ed"])
def test_opendkim_verifies_our_signature(
    world: tuple[DnsServer, Path], keys: dict[str, SigningKey], kind: str
) -> None:
    _, resolv = world
    signed = ours(keys[kind]).sign(MSG) + MSG
    result = in_namespace(resolv, ["opendkim-testmsg"], signed.replace(b"\r\n", b"\n"))
    assert result.returncode == 0, result.stderr
    # The check can fail: a changed body is refused.
    tampered = signed.replace(b"signed.", b"forged.")
    result = in_namespace(resolv, ["opendkim-testmsg"], tampered.replace(b"\r\n", b"\n"))
    assert result.returncode != 0
    assert b"bad" in result.stderr.lower() or b"fail" in result.stderr.lower()


def test_opendkim_testkey_accepts_our_published_key(
    world: tuple[DnsServer, Path], keys: dict[str, SigningKey], tmp_path: Path
) -> None:
    # opendkim-testkey resolves with libunbound, which takes a forwarder with a port.
    server, _ = world
    unbound = tmp_path / "unbound.conf"
    unbound.write_text(
        # unbound answers NXDOMAIN for test. itself (RFC 6761) unless told otherwise.
        'server:\n    do-not-query-localhost: no\n    local-zone: "test." nodefault\n'
        f'forward-zone:\n    name: "."\n    forward-addr: {server.address}@{server.port}\n'
    )
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"ResolverConfiguration {unbound}\n")
    key = keys["rsa"]
    argv = ["opendkim-testkey", "-x", str(conf), "-d", key.domain, "-s", key.selector]
    result = subprocess.run(
        [*argv, "-vvv", "-k", str(key.private_path)], capture_output=True, timeout=30
    )
    assert result.returncode == 0, (result.stderr, server.queries())
    assert b"key OK" in result.stderr + result.stdout
    # A key that does not match the record is refused.
    result = subprocess.run(
        [*argv, "-k", str(keys["opendkim"].private_path)], capture_output=True, timeout=30
    )
    assert result.returncode != 0


@pytest.fixture
def blocking(world: tuple[DnsServer, Path]) -> Iterator[BlockingDns]:
    server, _ = world
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield BlockingDns(DnsResolver([server.nameserver], timeout=2.0), loop, timeout=5.0)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_we_verify_opendkim_signed_mail(
    world: tuple[DnsServer, Path], keys: dict[str, SigningKey], blocking: BlockingDns
) -> None:
    key = keys["opendkim"]
    argv = ["opendkim-testmsg", "-C", "-d", key.domain, "-s", key.selector]
    result = subprocess.run(
        [*argv, "-k", str(key.private_path)], input=MSG, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    signed = result.stdout
    assert signed.startswith(b"DKIM-Signature:")
    [verdict] = verify_dkim(signed, blocking)
    assert (verdict.result, verdict.selector) == ("pass", "od"), verdict
    [verdict] = verify_dkim(signed.replace(b"signed.", b"forged."), blocking)
    assert verdict.result == "fail"


def test_real_dns_ed25519_revoked_and_missing(
    world: tuple[DnsServer, Path], keys: dict[str, SigningKey], blocking: BlockingDns
) -> None:
    both = ours(keys["rsa"], keys["ed"]).sign(MSG) + MSG
    assert [r.result for r in verify_dkim(both, blocking)] == ["pass", "pass"]
    revoked = both.replace(b"s=ip;", b"s=revoked;", 1)
    assert verify_dkim(revoked, blocking)[0].reason == "key revoked"
    missing = both.replace(b"s=ip;", b"s=nokey;", 1)
    assert verify_dkim(missing, blocking)[0].result == "permerror"
