"""``ironpost dns records`` output loaded into a real authoritative server (NSD) and
checked with verifiers we did not write: pyspf evaluates the SPF record, dkimpy verifies
a message signed with the published key (RSA and ed25519), dnspython parses the rest.

Each zone file is the fragment :func:`render_fragment` prints, behind the SOA and NS a
zone's owner adds. NSD runs as a child of the test on 127.0.0.(230 + xdist worker) and a
free port, with its own nsd.conf in a temp dir; nothing here reads /etc/resolv.conf.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import dns.resolver
import pytest
import spf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dns_server import free_port

from ironpost.auth.dkim_keys import generate_key, read_private_key
from ironpost.cli.dns_records import dkim_public_keys
from ironpost.config import load
from ironpost.deliverability import (
    RecordSet,
    build_records,
    options_from_settings,
    render_fragment,
    render_zone,
)

NSD = "/usr/sbin/nsd"
NSD_CHECKZONE = "/usr/sbin/nsd-checkzone"
ROOT = Path(__file__).resolve().parents[2]
PUBLIC_V4 = "192.0.2.25"
PUBLIC_V6 = "2001:db8::25"
DOMAINS = ("example.test", "other.test")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(NSD).exists(), reason="nsd is not installed"),
]

MAIN_CF = """\
myhostname = mail.example.test
mydomain = example.test
myorigin = $mydomain
mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain
virtual_alias_domains = other.test
inet_interfaces = 127.0.0.1
dkim_signing_table = inline:{ { example.test = rsa2048, ed1 } }
"""


def nsd_address() -> str:
    """127.0.0.230 for xdist worker gw0, .231 for gw1, … (no other fixture uses these)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = "".join(c for c in worker if c.isdigit()) or "0"
    return f"127.0.0.{230 + int(digits) % 25}"


def zone_file(domain: str, fragment: str, address: str) -> str:
    """What the zone's owner wraps around our fragment: SOA and NS."""
    return (
        f"{domain}. 3600 IN SOA ns.{domain}. hostmaster.{domain}. 1 3600 600 86400 300\n"
        f"{domain}. 3600 IN NS ns.{domain}.\n"
        f"ns.{domain}. 3600 IN A {address}\n"
        f"{fragment}"
    )


@dataclass
class Nsd:
    address: str
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    def resolver(self) -> dns.resolver.Resolver:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [self.address]
        res.port = self.port
        res.lifetime = 5.0
        return res

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_nsd(zones: dict[str, str], directory: Path) -> Nsd:
    """NSD serving ``zones`` (domain -> zone text), in the foreground, as root."""
    address = nsd_address()
    for domain, text in zones.items():
        (directory / f"{domain}.zone").write_text(text)
    zone_conf = "".join(f'zone:\n  name: "{d}"\n  zonefile: "{d}.zone"\n' for d in zones)
    log = directory / "nsd.log"
    for _attempt in range(3):
        port = free_port(address)
        conf = directory / "nsd.conf"
        conf.write_text(
            "server:\n"
            f"  port: {port}\n"
            f"  ip-address: {address}\n"
            '  username: ""\n'
            '  chroot: ""\n'
            f'  zonesdir: "{directory}"\n'
            f'  pidfile: "{directory}/nsd.pid"\n'
            '  database: ""\n'
            f'  zonelistfile: "{directory}/zone.list"\n'
            f'  xfrdfile: "{directory}/xfrd.state"\n'
            f'  xfrdir: "{directory}"\n'
            f'  logfile: "{log}"\n'
            "  server-count: 1\n"
            "  do-ip6: no\n"
            "  verbosity: 2\n"
            "remote-control:\n  control-enable: no\n" + zone_conf
        )
        process = subprocess.Popen(
            [NSD, "-d", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        nsd = Nsd(address, port, process, directory)
        if _wait_ready(nsd, next(iter(zones))):
            return nsd
        nsd.stop()
    text = log.read_text(errors="replace") if log.exists() else ""
    raise RuntimeError(f"nsd did not start on {address}: {text.strip()[-2000:]}")


def _wait_ready(nsd: Nsd, domain: str) -> bool:
    query = dns.message.make_query(domain, "SOA")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if nsd.process.poll() is not None:
            return False
        try:
            reply = dns.query.udp(query, nsd.address, port=nsd.port, timeout=0.2)
        except (dns.exception.Timeout, OSError):
            time.sleep(0.05)
            continue
        if reply.answer:
            return True
        time.sleep(0.05)
    return False


# -- the keys and the record set --------------------------------------------------------


@dataclass
class Setup:
    records: RecordSet  # what the command prints, as values
    zone_text: str  # what the command printed, loaded verbatim into NSD
    rsa_pem: bytes  # PKCS#1, as dkimpy signs with
    ed_seed_b64: bytes  # dkimpy's ed25519 private key form
    nsd: Nsd


def dkimpy_keys(config: Path) -> tuple[bytes, bytes]:
    """Keys as ``ironpost dkim keygen`` writes them, then in the forms dkimpy signs with."""
    directory = config / "dkim" / "example.test"
    rsa_key = read_private_key(generate_key(directory, "example.test", "rsa2048").private_path)
    ed_key = read_private_key(
        generate_key(directory, "example.test", "ed1", ed25519=True).private_path
    )
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert isinstance(ed_key, ed25519.Ed25519PrivateKey)
    seed = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return pem, base64.b64encode(seed)


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("MAIL_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "ironpost", "dns", "records", "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("records")
    config = base / "etc"
    config.mkdir()
    (config / "main.cf").write_text(MAIN_CF)
    rsa_pem, ed_seed = dkimpy_keys(config)
    done = run_cli(config, "--ip", PUBLIC_V4, "--ip", PUBLIC_V6)
    assert done.returncode == 0, done.stderr
    loaded = load(config)
    keys, error = dkim_public_keys(loaded.settings, config)
    assert error is None and len(keys) == 2
    options = options_from_settings(loaded.settings, dkim=keys, ips=[PUBLIC_V4, PUBLIC_V6])
    records = build_records(options, keys)
    assert done.stdout == render_zone(records)
    # Every name is under test., so the whole output is one zone's worth of records.
    served = base / "nsd"
    served.mkdir()
    nsd = start_nsd({"test": zone_file("test", done.stdout, nsd_address())}, served)
    yield Setup(records, done.stdout, rsa_pem, ed_seed, nsd)
    nsd.stop()


def _txt(nsd: Nsd, name: str) -> list[bytes]:
    answer = nsd.resolver().resolve(name, "TXT")
    return [b"".join(r.strings) for r in answer]


# -- the checks -------------------------------------------------------------------------


def test_every_domain_fragment_is_a_loadable_zone(setup: Setup, tmp_path: Path) -> None:
    """Each domain's fragment alone, behind its owner's SOA and NS, passes nsd-checkzone."""
    records = setup.records
    assert [z.domain for z in records.zones] == list(DOMAINS)
    for z in records.zones:
        path = tmp_path / f"{z.domain}.zone"
        path.write_text(zone_file(z.domain, render_fragment(z, records.ttl), nsd_address()))
        done = subprocess.run(
            [NSD_CHECKZONE, z.domain, str(path)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_mx_and_host_addresses_are_served(setup: Setup) -> None:
    res = setup.nsd.resolver()
    for domain in DOMAINS:
        mx = list(res.resolve(domain, "MX"))
        assert [(r.preference, r.exchange.to_text()) for r in mx] == [(10, "mail.example.test.")]
    assert [r.address for r in res.resolve("mail.example.test", "A")] == [PUBLIC_V4]
    assert [r.address for r in res.resolve("mail.example.test", "AAAA")] == [PUBLIC_V6]


@pytest.fixture
def spf_dns(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point pyspf's one DNS hook at NSD, through a dnspython resolver of the test's own."""
    res = setup.nsd.resolver()

    def lookup(name: str, qtype: str, *args: Any, **kw: Any) -> list[Any]:
        try:
            answer = res.resolve(name, qtype)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            return []
        out: list[Any] = []
        for r in answer:
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), r.address))
            elif qtype == "MX":
                out.append(((name, qtype), (r.preference, r.exchange)))
            elif qtype == "TXT":
                out.append(((name, qtype), r.strings))
            elif qtype == "PTR":
                out.append(((name, qtype), r.target.to_text(True)))
        return out

    monkeypatch.setattr(spf, "DNSLookup", lookup)


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.usefixtures("spf_dns")
def test_spf_passes_for_our_addresses_and_fails_for_others(domain: str) -> None:
    sender = f"someone@{domain}"
    for ip in (PUBLIC_V4, PUBLIC_V6):
        result = spf.query(i=ip, s=sender, h="mail.example.test").check()
        assert result[0] == "pass", (ip, result)
    result = spf.query(i="198.51.100.7", s=sender, h="elsewhere.test").check()
    assert result[0] == "fail", result


@pytest.mark.usefixtures("spf_dns")
def test_helo_spf_passes_for_our_address() -> None:
    # A null sender (a bounce) is judged by the HELO name alone (RFC 7208 §2.4).
    assert spf.query(i=PUBLIC_V4, s="", h="mail.example.test").check()[0] == "pass"
    assert spf.query(i="198.51.100.7", s="", h="mail.example.test").check()[0] == "fail"


MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@elsewhere.test\r\n"
    b"Subject: records\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <records-1@example.test>\r\n"
    b"\r\n"
    b"Signed with the key the zone publishes.\r\n"
)


@pytest.mark.parametrize("selector", ["rsa2048", "ed1"])
def test_dkim_signature_verifies_against_the_published_key(setup: Setup, selector: str) -> None:
    res = setup.nsd.resolver()

    def dnsfunc(name: str | bytes, timeout: float = 5) -> bytes | None:
        qname = name.decode() if isinstance(name, bytes) else name
        try:
            answer = res.resolve(qname, "TXT")
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            return None
        return b"".join(next(iter(answer)).strings)

    if selector == "ed1":
        key, algorithm = setup.ed_seed_b64, b"ed25519-sha256"
    else:
        key, algorithm = setup.rsa_pem, b"rsa-sha256"
    signature = dkim.sign(
        MESSAGE,
        selector.encode(),
        b"example.test",
        key,
        signature_algorithm=algorithm,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    signed = signature + MESSAGE
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    assert not dkim.verify(signed.replace(b"Signed with", b"Forged with"), dnsfunc=dnsfunc)
    # The 2048-bit RSA record is longer than one character-string: it was split.
    if selector == "rsa2048":
        (rdata,) = res.resolve(f"{selector}._domainkey.example.test", "TXT")
        assert len(rdata.strings) > 1 and all(len(s) <= 255 for s in rdata.strings)


def _tags(value: bytes) -> dict[str, str]:
    out = {}
    for part in value.decode().split(";"):
        if part.strip():
            k, _, v = part.partition("=")
            out[k.strip()] = v.strip()
    return out


@pytest.mark.parametrize("domain", DOMAINS)
def test_dmarc_tlsrpt_and_mta_sts_records_parse(setup: Setup, domain: str) -> None:
    nsd = setup.nsd
    (dmarc,) = _txt(nsd, f"_dmarc.{domain}")
    tags = _tags(dmarc)
    assert next(iter(tags)) == "v" and tags["v"] == "DMARC1"
    assert tags["p"] == "quarantine"
    assert tags["rua"] == f"mailto:postmaster@{domain}"

    (tlsrpt,) = _txt(nsd, f"_smtp._tls.{domain}")
    assert _tags(tlsrpt) == {"v": "TLSRPTv1", "rua": f"mailto:postmaster@{domain}"}

    (sts,) = _txt(nsd, f"_mta-sts.{domain}")
    tags = _tags(sts)
    assert tags["v"] == "STSv1"
    assert tags["id"].isalnum() and 1 <= len(tags["id"]) <= 32
    zone = next(z for z in setup.records.zones if z.domain == domain)
    assert zone.mta_sts is not None and tags["id"] == zone.mta_sts.policy_id
    policy = dict(line.split(": ", 1) for line in zone.mta_sts.policy.splitlines() if line)
    assert policy == {
        "version": "STSv1",
        "mode": "testing",
        "mx": "mail.example.test",
        "max_age": "604800",
    }
    # The policy is in the printed output, as comments, for the web server's admin.
    assert ";\tmx: mail.example.test" in setup.zone_text


def test_served_records_equal_the_expected_list(setup: Setup) -> None:
    """What a doctor does: every expected record (PTRs aside) is served as built."""
    res = setup.nsd.resolver()
    expected = setup.records.expected()
    assert {r.type for r in expected} == {"MX", "A", "AAAA", "TXT", "PTR"}
    for record in expected:
        if record.type == "PTR":
            assert record.name == "25.2.0.192.in-addr.arpa." or record.name.endswith("ip6.arpa.")
            continue
        answer = res.resolve(record.name, record.type)
        if record.type == "TXT":
            served = {b"".join(r.strings).decode() for r in answer}
        else:
            served = {r.to_text() for r in answer}
        assert record.value in served, (record, served)


# -- the command -----------------------------------------------------------------------


def test_cli_json_matches_the_zone_output(setup: Setup, tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(MAIN_CF)
    config = tmp_path
    dkimpy_keys(config)
    done = run_cli(config, "--format", "json", "--ip", PUBLIC_V4)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [d["domain"] for d in data["domains"]] == list(DOMAINS)
    example = data["domains"][0]
    names = {(r["name"], r["type"]) for r in example["records"]}
    assert ("rsa2048._domainkey.example.test.", "TXT") in names
    assert ("ed1._domainkey.example.test.", "TXT") in names
    assert example["mta_sts"]["policy"].startswith("version: STSv1\r\n")
    assert data["ptr"] == [
        {
            "name": "25.2.0.192.in-addr.arpa.",
            "type": "PTR",
            "ttl": 3600,
            "value": "mail.example.test.",
            "comment": f"ask the provider of {PUBLIC_V4} to set it "
            f"(forward-confirmed: mail.example.test. has {PUBLIC_V4})",
        }
    ]


def test_cli_does_not_publish_a_loopback_listener(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(MAIN_CF.replace("dkim_signing_table", "#"))
    done = run_cli(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "; WARNING: 127.0.0.1 is a loopback address: not published" in done.stdout
    assert "127.0.0.1 is a loopback address" in done.stderr
    assert "\tIN\tA\t" not in done.stdout and "in-addr.arpa" not in done.stdout
    assert '"v=spf1 mx a -all"' in done.stdout


def test_cli_fails_on_an_unreadable_dkim_key_but_prints_the_rest(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(MAIN_CF)  # the table names keys that do not exist
    done = run_cli(tmp_path, "--ip", PUBLIC_V4)
    assert done.returncode == 1
    assert "DKIM keys not loaded" in done.stderr
    assert "_dmarc.example.test." in done.stdout
