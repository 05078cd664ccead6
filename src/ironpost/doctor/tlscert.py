"""TLS: the server certificate is valid for myhostname, with the days left to expiry.

Owns :func:`check_certificate` (pure: a PEM file, a host name and "now" in, one Check
out) and :func:`certificate_files` (which file the server would load: the first of
``smtpd_tls_chain_files``, else ``smtpd_tls_cert_file``, else the self-signed one it
generates under ``data_directory/tls``).

Thresholds: warn under :data:`WARN_DAYS` days left (renewal should have happened by
then: certbot renews at 30), fail under :data:`FAIL_DAYS` (renewal has evidently
failed, and senders that verify will stop delivering within the week), fail when
expired, not yet valid, or not valid for myhostname. A self-signed certificate warns:
opportunistic senders accept it, but MTA-STS and DANE-less verification do not.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from ironpost.config import Settings
from ironpost.doctor.check import Check, failed, passed, warned

FAMILY = "tls"
WARN_DAYS = 21
FAIL_DAYS = 7


def certificate_files(settings: Settings) -> tuple[Path, bool]:
    """``(certificate file, generated)``."""
    chain = settings.words("smtpd_tls_chain_files")
    if chain:
        return Path(chain[0]), False
    cert = settings.text("smtpd_tls_cert_file")
    if cert:
        return Path(cert), False
    return Path(settings.text("data_directory")) / "tls" / "selfsigned.pem", True


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        # RFC 6125 allows the CN only when there is no SAN at all.
        return [
            str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]


def matches(pattern: str, host: str) -> bool:
    """RFC 6125 §6.4.3: exact, or one ``*`` as the whole leftmost label."""
    pattern, host = pattern.rstrip(".").lower(), host.rstrip(".").lower()
    if pattern == host:
        return True
    if pattern.startswith("*.") and "." in host:
        return host.split(".", 1)[1] == pattern[2:] and pattern.count(".") >= 2
    return False


def check_certificate(
    path: Path,
    hostname: str,
    *,
    generated: bool = False,
    now: datetime.datetime | None = None,
) -> Check:
    title = f"TLS certificate {path}"
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        if generated:
            return warned(
                FAMILY,
                title,
                "no certificate yet (the server generates a self-signed one at its first start)",
                f"install a certificate for {hostname} (e.g. certbot) and set "
                "smtpd_tls_cert_file and smtpd_tls_key_file",
            )
        return failed(FAMILY, title, "file not found: STARTTLS is disabled", _fix(hostname))
    except (OSError, ValueError) as exc:
        return failed(FAMILY, title, f"cannot read a PEM certificate: {exc}", _fix(hostname))
    names = _names(cert)
    after = cert.not_valid_after_utc
    days = (after - now).total_seconds() / 86400
    when = f"expires {after:%Y-%m-%d}"
    if now < cert.not_valid_before_utc:
        return failed(
            FAMILY, title, f"not valid before {cert.not_valid_before_utc:%Y-%m-%d}", _fix(hostname)
        )
    if days <= 0:
        return failed(FAMILY, title, f"expired on {after:%Y-%m-%d}", _fix(hostname))
    if not any(matches(n, hostname) for n in names):
        return failed(
            FAMILY,
            title,
            f"not valid for {hostname} (names: {', '.join(names) or 'none'})",
            _fix(hostname),
        )
    left = f"{int(days)} days left, {when}"
    if days < FAIL_DAYS:
        return failed(
            FAMILY,
            title,
            f"expires in {int(days)} days ({when}): renewal has failed",
            _fix(hostname),
        )
    if days < WARN_DAYS:
        return warned(FAMILY, title, f"expires soon: {left}", _fix(hostname))
    if generated or cert.issuer == cert.subject:
        return warned(
            FAMILY,
            title,
            f"self-signed ({left}): senders that verify (MTA-STS) will not deliver",
            _fix(hostname),
        )
    return passed(FAMILY, title, f"valid for {hostname}, {left}")


def _fix(hostname: str) -> str:
    return f"renew or replace the certificate for {hostname} (e.g. certbot) and reload ironpost"


def check_tls(settings: Iterable[Settings], hostname: str) -> list[Check]:
    """One check per distinct certificate of the listeners that offer TLS."""
    seen: dict[Path, bool] = {}
    for s in settings:
        level = s.raw("smtpd_tls_security_level").strip().lower()
        if level in ("", "none") and not s.boolean("smtpd_tls_wrappermode"):
            continue  # the config audit reports "TLS not offered"
        path, generated = certificate_files(s)
        seen.setdefault(path, generated)
    return [check_certificate(p, hostname, generated=g) for p, g in seen.items()]
