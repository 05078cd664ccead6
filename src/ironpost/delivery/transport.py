"""The transport contract: what the queue manager hands a delivery agent, and what it gets back.

A delivery agent (smtp, lmtp, maildir, discard, error) receives one
:class:`DeliveryRequest`: one message, a batch of its recipients that share a
transport and next hop. It returns exactly one :class:`RecipientResult` per recipient,
in any order, and never raises for a delivery problem (a bug in an agent is caught by
the queue manager and defers the batch).

Reply texts in results may reach the sender in a bounce, so they carry the remote
server's words or a generic local text, never a path or a table name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ironpost.queue.model import Envelope, RecipientSpec


class Disposition(StrEnum):
    SENT = "sent"  # 2xx: delivered (or relayed) and no longer our responsibility
    DEFERRED = "deferred"  # 4xx or a local/temporary problem: retry later
    BOUNCED = "bounced"  # 5xx: permanent failure, the sender gets a DSN


@dataclass(frozen=True, slots=True)
class NextHop:
    """Where a batch goes: ``transport:nexthop`` after transport_maps/relayhost."""

    transport: str  # "smtp", "lmtp", "maildir", "discard", "error", …
    nexthop: str  # "example.com", "[192.0.2.1]:2525", "unix:/path", "inet:host:port", …

    def __str__(self) -> str:
        return f"{self.transport}:{self.nexthop}"


@dataclass(frozen=True, slots=True)
class BatchRecipient:
    index: int  # the recipient's index in the queued message
    spec: RecipientSpec


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    queue_id: str
    envelope: Envelope  # sender, size, body_type, smtputf8, ret, envid, client, arrival
    recipients: tuple[BatchRecipient, ...]
    content: bytes  # the stored message, CRLF line endings, no dot-stuffing
    nexthop: NextHop


@dataclass(frozen=True, slots=True)
class RecipientResult:
    index: int
    disposition: Disposition
    dsn: str  # enhanced status code, e.g. "2.0.0", "4.4.1", "5.1.1"
    reply: str  # e.g. "host mx.example[192.0.2.1] said: 550 5.1.1 no such user"
    relay: str  # Postfix's relay= field: "mx.example[192.0.2.1]:25", "none", …
    # delays c (connection setup incl. DNS, TLS, HELO) and d (transmission), seconds
    conn_delay: float = 0.0
    xfer_delay: float = 0.0
    # The next hop supports DSN: False means a NOTIFY=SUCCESS recipient gets "relayed".
    remote_dsn: bool = True
    # The whole destination failed (no connection to any MX): the scheduler may mark it dead.
    destination_failed: bool = False


class Transport(Protocol):
    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]: ...

    async def close(self) -> None:
        """Close cached connections (QUIT), at shutdown."""
        ...
