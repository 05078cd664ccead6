"""``ironpost doctor`` against zones served by a real DNS server on loopback (dnsmasq),
a real certificate chain made here, and a real ironpost for the open-relay test.

The correct deployment publishes exactly what ``ironpost dns records`` prints (the
record set is built by the same code), so every check passes. Each broken deployment
changes one thing and must give its FAIL line. Our "public" address is 127.0.0.117
(``--ip`` is taken as given); the relay test comes from 127.0.0.118, outside
mynetworks (127.0.0.1/32 in the harness).
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dns_server import DnsServer
from mta_harness import ROOT, MtaFactory, _env, write_config

from ironpost.auth.dkim_keys import generate_key
from ironpost.config import load
from ironpost.deliverability import build_records, options_from_settings
from ironpost.doctor.runner import Options, gather

pytestmark = pytest.mark.integration

OUR_IP = "127.0.0.117"
SOURCE = "127.0.0.118"
HOSTNAME = "mail.example.test"
BL = "bl.doctor.test"
LISTED = "117.0.0.127." + BL

DOCTOR_CF = f"""
smtpd_recipient_restrictions = reject_non_fqdn_recipient, reject_unlisted_recipient,
    reject_rbl_client {BL}
dkim_signing_table = inline:{{ example.test=sel1 }}
smtpd_tls_cert_file = {{cert}}
smtpd_tls_key_file = {{key}}
"""


def make_cert(directory: Path, *, days: int, name: str = HOSTNAME) -> tuple[Path, Path]:
    """A leaf for ``name`` signed by a throwaway CA (so it is not self-signed)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Doctor Test CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def configure(directory: Path, dns: DnsServer | None, *, days: int = 90, extra: str = "") -> int:
    """A config dir (harness main.cf + the doctor's settings); returns the smtpd port."""
    cert, key = make_cert(directory / "tls", days=days)
    main = DOCTOR_CF.replace("{cert}", str(cert)).replace("{key}", str(key)) + extra
    if dns is not None:
        main += f"dns_nameservers = {dns.nameserver}\n"
    port = write_config(directory, main)
    key_dir = directory / "dkim" / "example.test"
    if not (key_dir / "sel1.private").exists():
        generate_key(key_dir, "example.test", "sel1", bits=1024)
    return port


def published(directory: Path) -> dict[str, dict[str, list[Any]]]:
    """The zones of the correct deployment: what ``ironpost dns records`` prints."""
    loaded = load(directory)
    inputs = gather(loaded, Options(ips=(OUR_IP,)), resolver=_NoDns())
    options = options_from_settings(loaded.settings, ips=(OUR_IP,))
    from ironpost.cli.dns_records import dkim_public_keys

    keys, error = dkim_public_keys(loaded.settings, loaded.config_dir)
    assert error is None and inputs.dkim_keys
    records = build_records(options, keys)
    zones: dict[str, dict[str, list[Any]]] = {}
    for r in records.expected():
        value: Any = r.value
        if r.type == "MX":
            pref, host = r.value.split()
            value = (int(pref), host)
        zones.setdefault(r.name.rstrip("."), {}).setdefault(r.type, []).append(value)
    return zones


class _NoDns:
    """gather() does no lookups; this only satisfies its signature."""

    async def mx(self, name: str) -> Any: ...
    async def a(self, name: str) -> Any: ...
    async def aaaa(self, name: str) -> Any: ...
    async def txt(self, name: str) -> Any: ...
    async def ptr(self, address: str) -> Any: ...


def doctor(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ironpost.cli.doctor", "-c", str(directory), "--ip", OUR_IP, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=ROOT,
    )


def fail_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("FAIL")]


Start = Callable[..., DnsServer]


@pytest.fixture
def correct(tmp_path: Path) -> tuple[Path, dict[str, dict[str, list[Any]]]]:
    directory = tmp_path / "cfg"
    directory.mkdir()
    configure(directory, None)
    return directory, published(directory)


def _broken(
    tmp_path: Path,
    dns_server: Start,
    zones: dict[str, dict[str, list[Any]]],
    *,
    days: int = 90,
    extra: str = "",
) -> subprocess.CompletedProcess[str]:
    directory = tmp_path / "cfg"
    server = dns_server(zones)
    configure(directory, server, days=days, extra=extra)
    return doctor(directory, "--skip", "relay")


def test_correct_deployment_passes_everything(
    correct: tuple[Path, dict[str, dict[str, list[Any]]]],
    dns_server: Start,
    mta_factory: type[MtaFactory],
) -> None:
    directory, zones = correct
    server = dns_server(zones)
    cert, key = directory / "tls" / "cert.pem", directory / "tls" / "key.pem"
    main = DOCTOR_CF.replace("{cert}", str(cert)).replace("{key}", str(key))
    main += f"dkim_key_directory = {directory / 'dkim'}\n"  # the key the zones publish
    mta = mta_factory.start(main + f"dns_nameservers = {server.nameserver}\n")
    result = doctor(mta.dir, "--source", SOURCE, "--json")
    document = json.loads(result.stdout)
    problems = [c for c in document["checks"] if c["status"] != "pass"]
    assert problems == [], result.stdout + result.stderr
    assert result.returncode == 0
    titles = " | ".join(c["title"] for c in document["checks"])
    for expected in (
        "myhostname",
        "PTR",
        "MX",
        "SPF",
        "DKIM",
        "DMARC",
        "MTA-STS",
        "TLS-RPT",
        "TLS certificate",
        "DNSBL " + BL,
        "mynetworks",
        "open relay test",
    ):
        assert expected in titles
    relay = next(c for c in document["checks"] if c["family"] == "relay")
    assert "relay attempts from 127.0.0.118 were refused" in relay["detail"]
    assert "nrcpt=" not in mta.maillog  # QUIT before DATA: nothing was queued


def test_generic_ptr(tmp_path: Path, correct: Any, dns_server: Start) -> None:
    _, zones = correct
    zones["117.0.0.127.in-addr.arpa"] = {"PTR": ["127-0-0-117.dsl.provider.test"]}
    result = _broken(tmp_path, dns_server, zones)
    assert result.returncode == 1
    assert (
        "FAIL  PTR 127.0.0.117: 127-0-0-117.dsl.provider.test is a generic name" in result.stdout
    ), result.stdout


def test_spf_without_our_ip(tmp_path: Path, correct: Any, dns_server: Start) -> None:
    _, zones = correct
    zones["example.test"]["TXT"] = ["v=spf1 ip4:192.0.2.1 -all"]
    result = _broken(tmp_path, dns_server, zones)
    assert result.returncode == 1
    assert "FAIL  SPF example.test for 127.0.0.117: fail: 127.0.0.117 is not authorised" in (
        result.stdout
    ), result.stdout


def test_dkim_key_mismatch(tmp_path: Path, correct: Any, dns_server: Start) -> None:
    _, zones = correct
    other = generate_key(tmp_path / "other", "example.test", "sel1", bits=1024)
    zones["sel1._domainkey.example.test"]["TXT"] = [f"v=DKIM1; k=rsa; p={other.public_b64}"]
    result = _broken(tmp_path, dns_server, zones)
    assert result.returncode == 1
    assert "FAIL  DKIM sel1._domainkey.example.test: the published key does not match" in (
        result.stdout
    ), result.stdout


def test_missing_dmarc(tmp_path: Path, correct: Any, dns_server: Start) -> None:
    _, zones = correct
    del zones["_dmarc.example.test"]
    result = _broken(tmp_path, dns_server, zones)
    assert result.returncode == 1
    assert "FAIL  DMARC example.test: no DMARC record at _dmarc.example.test" in result.stdout


def test_listed_ip(tmp_path: Path, correct: Any, dns_server: Start) -> None:
    _, zones = correct
    zones[LISTED] = {"A": ["127.0.0.2"], "TXT": ["listed for testing"]}
    result = _broken(tmp_path, dns_server, zones)
    assert result.returncode == 1
    assert (
        f"FAIL  DNSBL {BL} 127.0.0.117: 127.0.0.117 is listed (127.0.0.2): listed for testing"
        in result.stdout
    ), result.stdout


def test_resolver_refused_by_the_list_is_not_a_listing(
    tmp_path: Path, correct: Any, dns_server: Start
) -> None:
    _, zones = correct
    zones[LISTED] = {"A": ["127.255.255.254"]}
    result = _broken(tmp_path, dns_server, zones)
    assert f"WARN  DNSBL {BL} 127.0.0.117: query refused: your resolver is blocked" in (
        result.stdout
    ), result.stdout
    assert result.returncode == 0, result.stdout


def test_expiring_certificate(tmp_path: Path, correct: Any, dns_server: Start) -> None:
    _, zones = correct
    result = _broken(tmp_path, dns_server, zones, days=5)
    assert result.returncode == 1
    lines = [line for line in fail_lines(result.stdout) if "TLS certificate" in line]
    assert len(lines) == 1 and "expires in 4 days" in lines[0], result.stdout


def test_open_relay(correct: Any, dns_server: Start, mta_factory: type[MtaFactory]) -> None:
    directory, zones = correct
    server = dns_server(zones)
    cert, key = directory / "tls" / "cert.pem", directory / "tls" / "key.pem"
    main = DOCTOR_CF.replace("{cert}", str(cert)).replace("{key}", str(key))
    main += f"dkim_key_directory = {directory / 'dkim'}\n"  # the key the zones publish
    mta = mta_factory.start(
        main
        + f"dns_nameservers = {server.nameserver}\n"
        + "mynetworks = 127.0.0.0/8\n"
        + "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"
    )
    result = doctor(mta.dir, "--source", SOURCE, "--skip", "names", "--skip", "records")
    assert result.returncode == 1
    relay = [line for line in fail_lines(result.stdout) if "open relay test" in line]
    assert len(relay) == 1, result.stdout
    assert "OPEN RELAY" in relay[0] and "<victim@example.com>" in relay[0]
    # QUIT before DATA: nothing was queued.
    assert "nrcpt=" not in mta.maillog


def test_permit_before_the_guard_is_an_open_relay(
    correct: Any, dns_server: Start, mta_factory: type[MtaFactory]
) -> None:
    directory, zones = correct
    server = dns_server(zones)
    cert, key = directory / "tls" / "cert.pem", directory / "tls" / "key.pem"
    main = DOCTOR_CF.replace("{cert}", str(cert)).replace("{key}", str(key))
    main += f"dkim_key_directory = {directory / 'dkim'}\n"  # the key the zones publish
    mta = mta_factory.start(
        main
        + f"dns_nameservers = {server.nameserver}\n"
        + "smtpd_relay_restrictions = permit, reject_unauth_destination\n"
    )
    result = doctor(mta.dir, "--source", SOURCE, "--skip", "names", "--skip", "records")
    fails = fail_lines(result.stdout)
    assert any("relay restrictions" in f and "open relay" in f for f in fails), result.stdout
    assert any("open relay test" in f and "OPEN RELAY" in f for f in fails), result.stdout
