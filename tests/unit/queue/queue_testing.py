"""Shared values for the queue tests (a unique module name: tests have no packages)."""

from __future__ import annotations

from collections.abc import Callable

from ironpost.queue import ClientInfo, Envelope, RecipientSpec

CLIENT = ClientInfo(
    address="192.0.2.7",
    name="mx.example.org",
    helo="mx.example.org",
    protocol="ESMTPS",
    tls="TLSv1.3 TLS_AES_256_GCM_SHA384",
    sasl_username=None,
)

EnvelopeFactory = Callable[..., Envelope]


def build_envelope(
    *recipients: str, sender: str = "alice@example.org", arrival: float = 1_700_000_000.0
) -> Envelope:
    rcpts = recipients or ("bob@example.net",)
    return Envelope(
        sender=sender,
        recipients=tuple(RecipientSpec(address=r, original=r.upper()) for r in rcpts),
        size=100,
        body_type="8BITMIME",
        smtputf8=False,
        ret="HDRS",
        envid="env-1",
        client=CLIENT,
        arrival=arrival,
    )
