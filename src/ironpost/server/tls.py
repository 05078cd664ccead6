"""TLS for the SMTP server: contexts from smtpd_tls_* settings, and the
self-signed certificate generated at first start when none is configured.

Invariants: TLS 1.2 is the floor whatever the configuration says; a private key
written by us is mode 0600 from the moment it exists.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ironpost.fsutil import write_atomic


class TlsConfigError(Exception):
    """The configured certificate or key cannot be loaded."""


@dataclass(frozen=True, slots=True)
class CertPair:
    chain: Path
    key: Path
    generated: bool


def ensure_self_signed(data_directory: Path, hostname: str) -> CertPair:
    """Return the generated certificate under ``data_directory``, creating it if absent."""
    cert = data_directory / "tls" / "selfsigned.pem"
    key = data_directory / "tls" / "selfsigned.key"
    if cert.exists() and key.exists():
        return CertPair(cert, key, generated=False)
    cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(hostname)]
    alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    key_bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(key, key_bytes, mode=0o600)
    # Public, but nothing under the data directory is world-readable (umask 077).
    write_atomic(cert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o600)
    return CertPair(cert, key, generated=True)


def server_context(chain: Path, key: Path | None) -> ssl.SSLContext:
    """A server context: TLS >= 1.2, no compression, server cipher preference.

    ``key`` None means the chain file holds the key too (smtpd_tls_chain_files form).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(str(chain), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"cannot load TLS certificate {chain}: {exc}") from exc
    return ctx


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)``, as Postfix logs it."""
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    version = ssl_object.version() or "TLS"
    if not cipher:
        return version
    name, _, bits = cipher
    return f"{version} with cipher {name} ({bits}/{bits} bits)"
