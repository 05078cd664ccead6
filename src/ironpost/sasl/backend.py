"""The contract between the SMTP server and a SASL back-end (RFC 4422, RFC 4954).

Owns :class:`SaslBackend` (what a back-end offers), :class:`SaslExchange` (one AUTH
command's conversation) and the three outcomes of a step. The server owns the SMTP
side: base64 framing, ``334``/``235``/``535`` replies, ``*`` cancel, TLS-only policy,
failure counting and delays. A back-end owns the mechanism and the credentials.

Invariants:

* challenges and responses cross this interface as raw bytes, never base64;
* a :class:`Failure` never carries a password or any other credential, only the
  authentication identity the client claimed (for the log and the per-user limits);
* a back-end that cannot answer (Dovecot down, file unreadable) returns
  ``Failure(temporary=True)``: the client gets ``454 4.7.0``, not ``535``;
* an unknown user and a wrong password look the same to the client, in reply and
  (as far as the back-end can manage) in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ClientMeta:
    """What a back-end may know about the client (Dovecot logs and uses it)."""

    address: str
    local_address: str = ""
    local_port: int = 0
    port: int = 0
    tls: bool = False
    service: str = "smtp"


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``334 base64(data)`` and wait for the client's next line."""

    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Success:
    """Authenticated as ``username`` (the authorization identity)."""

    username: str
    #: Additional data to send with 235 (SCRAM's server-final message), or None.
    final: bytes | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """Authentication failed. ``username`` is the identity the client claimed, if any."""

    username: str | None = None
    temporary: bool = False
    reason: str = "authentication failure"  # for the log; never a credential


Outcome = Challenge | Success | Failure


class SaslExchange(Protocol):
    """One AUTH conversation. ``step`` is called first with the initial response
    (``None`` when the client sent none, ``b""`` for ``=``), then once per client line,
    until it returns Success or Failure."""

    async def step(self, response: bytes | None) -> Outcome: ...

    def cancel(self) -> None:
        """The client sent ``*`` or went away; release what the exchange holds."""


class SaslBackend(Protocol):
    """A source of SASL mechanisms and credentials (built-in passwd file, Dovecot)."""

    name: str  # "ironpost" or "dovecot", as in smtpd_sasl_type

    def mechanisms(self) -> tuple[str, ...]:
        """Mechanism names to advertise in EHLO, upper case, best first."""

    def begin(self, mechanism: str, client: ClientMeta) -> SaslExchange:
        """Start an exchange; ``mechanism`` is one of :meth:`mechanisms`."""

    async def close(self) -> None:
        """Release connections and files."""
