"""A DKIM key pair for tests: an RSA-2048 private key (PEM) and its ``_domainkey`` record.

Made once per process (key generation costs a noticeable fraction of a second)."""

from __future__ import annotations

import base64
from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@cache
def rsa_key_and_record() -> tuple[bytes, str]:
    """(the private key as PEM, the TXT record ``v=DKIM1; k=rsa; p=…`` publishing it)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
