"""The client side of SASL as the SMTP client state machine sees it (RFC 4422, RFC 4954).

Owns the contract between :class:`~ironpost.protocol.client.ClientConnection` and a
mechanism that holds the credentials (``delivery.smtp_auth`` has PLAIN, LOGIN and
SCRAM-SHA-256), and the limit on round trips.
"""

from __future__ import annotations

from typing import Protocol


class SaslError(Exception):
    """A mechanism cannot answer a challenge. The text is logged: never put a secret in it."""


class SaslMechanism(Protocol):
    """The client side of one SASL mechanism exchange (RFC 4422), credentials included.

    ``delivery.smtp_auth`` has PLAIN, LOGIN and SCRAM-SHA-256. Data crosses this
    interface raw; the machine does the base64 framing of RFC 4954.
    """

    @property
    def name(self) -> str:
        """The mechanism name as sent after AUTH, upper case."""
        ...

    def initial(self) -> bytes | None:
        """The initial response (``b""``: an empty one), or None to wait for a challenge."""
        ...

    def step(self, challenge: bytes) -> bytes:
        """The answer to a ``334`` challenge; raises :class:`SaslError` to cancel."""
        ...


#: RFC 4954: the most 334 round trips we follow (Postfix's limit too), then cancel.
AUTH_STEP_LIMIT = 100
