"""The certificate check: validity for myhostname, days left, self-signed."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_doctor_support import settings_for

from ironpost.doctor.tlscert import check_certificate, check_tls, matches

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
HOST = "mail.example.org"


def cert(path: Path, *, days: float, names: list[str], self_signed: bool = False) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_key = key if self_signed else ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "x")])
    issuer = subject if self_signed else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=30))
        .not_valid_after(NOW + datetime.timedelta(days=days))
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    path.write_bytes(
        builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    return path


@pytest.mark.parametrize(
    ("days", "names", "status", "text"),
    [
        (90, [HOST], "pass", "valid for mail.example.org, 90 days left"),
        (90, ["*.example.org"], "pass", "90 days left"),
        (20, [HOST], "warn", "expires soon: 20 days left"),
        (5, [HOST], "fail", "expires in 5 days"),
        (-1, [HOST], "fail", "expired on 2029-12-31"),
        (90, ["www.example.org"], "fail", "not valid for mail.example.org"),
        (90, ["*.org"], "fail", "not valid for"),
    ],
)
def test_certificates(tmp_path: Path, days: int, names: list[str], status: str, text: str) -> None:
    check = check_certificate(cert(tmp_path / "c.pem", days=days, names=names), HOST, now=NOW)
    assert check.status == status, check
    assert text in check.detail


def test_self_signed_warns(tmp_path: Path) -> None:
    path = cert(tmp_path / "c.pem", days=800, names=[HOST], self_signed=True)
    check = check_certificate(path, HOST, now=NOW)
    assert check.status == "warn" and "self-signed" in check.detail


def test_missing_files(tmp_path: Path) -> None:
    assert check_certificate(tmp_path / "no.pem", HOST, generated=True).status == "warn"
    assert check_certificate(tmp_path / "no.pem", HOST).status == "fail"
    (tmp_path / "junk.pem").write_text("junk")
    assert check_certificate(tmp_path / "junk.pem", HOST).status == "fail"


def test_wildcards() -> None:
    assert matches("*.example.org", "mail.example.org")
    assert not matches("*.example.org", "a.mail.example.org")
    assert not matches("*.org", "example.org")
    assert matches("MAIL.example.org.", "mail.example.org")


def test_which_certificate(tmp_path: Path) -> None:
    path = cert(tmp_path / "c.pem", days=400, names=[HOST])
    loaded = settings_for(f"smtpd_tls_cert_file = {path}\n")
    [check] = check_tls([loaded.settings], HOST)
    assert str(path) in check.title
    off = settings_for("smtpd_tls_security_level = none\n")
    assert check_tls([off.settings], HOST) == []
    generated = settings_for("")
    [check] = check_tls([generated.settings], HOST)
    assert "selfsigned.pem" in check.title and check.status == "warn"
