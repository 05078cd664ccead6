"""The queue's nouns: a message (one envelope, one content) and its per-recipient state.

Invariants:
- a message's content is stored once; each recipient has its own row and status;
- a recipient's status is final once DELIVERED or BOUNCED; a message with only final
  recipients no longer exists in the queue;
- the envelope round-trips through :func:`envelope_to_json` / :func:`envelope_from_json`
  (recipients excluded: they live in their own rows), and a record that does not parse
  raises :class:`CorruptRecord`, never anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class QueueState(StrEnum):
    """Postfix's queues, made explicit as a message attribute."""

    INCOMING = "incoming"
    ACTIVE = "active"
    DEFERRED = "deferred"
    HOLD = "hold"
    CORRUPT = "corrupt"


class RecipientStatus(StrEnum):
    # PENDING: to be attempted (new, or claimed for the current attempt).
    PENDING = "pending"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"

    @property
    def is_final(self) -> bool:
        return self in (RecipientStatus.DELIVERED, RecipientStatus.BOUNCED)


@dataclass(frozen=True, slots=True)
class ClientInfo:
    address: str
    name: str
    helo: str
    protocol: str  # SMTP, ESMTP, ESMTPS, ESMTPSA, …
    tls: str | None = None  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"
    sasl_username: str | None = None


@dataclass(frozen=True, slots=True)
class RecipientSpec:
    address: str  # final, after alias expansion
    original: str  # as given at RCPT (DSN ORCPT / orig_to)
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  # "" is the null sender
    recipients: tuple[RecipientSpec, ...]
    size: int
    body_type: str | None
    smtputf8: bool
    ret: str | None
    envid: str | None
    client: ClientInfo
    arrival: float  # epoch seconds


@dataclass(slots=True)
class QueuedRecipient:
    index: int
    spec: RecipientSpec
    status: RecipientStatus
    attempts: int
    next_attempt: float
    last_reply: str | None


@dataclass(slots=True)
class QueuedMessage:
    id: str
    envelope: Envelope
    state: QueueState
    recipients: list[QueuedRecipient]
    size: int = 0  # stored content size in bytes (what mailq shows)
    # A delay warning (DSN Action: delayed) was queued for it: one warning per message.
    warned: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    message_id: str
    index: int
    status: RecipientStatus  # DELIVERED, DEFERRED or BOUNCED
    reply: str
    next_attempt: float | None = None  # required when status is DEFERRED


class QueueWriteError(Exception):
    """Durability could not be guaranteed; the server answers 451 4.3.0."""


class CorruptRecord(ValueError):
    """A stored record does not decode; the message goes to the CORRUPT state."""


def envelope_to_json(envelope: Envelope) -> str:
    """The envelope minus its recipients, as compact JSON."""
    c = envelope.client
    return json.dumps(
        {
            "v": 1,
            "sender": envelope.sender,
            "size": envelope.size,
            "body_type": envelope.body_type,
            "smtputf8": envelope.smtputf8,
            "ret": envelope.ret,
            "envid": envelope.envid,
            "arrival": envelope.arrival,
            "client": [c.address, c.name, c.helo, c.protocol, c.tls, c.sasl_username],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _opt_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise CorruptRecord(f"expected a string or null, got {type(value).__name__}")


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise CorruptRecord(f"expected a string, got {type(value).__name__}")


def envelope_from_json(text: str, recipients: tuple[RecipientSpec, ...]) -> Envelope:
    """Inverse of :func:`envelope_to_json`; raises :class:`CorruptRecord` on any mismatch."""
    try:
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("v") != 1:
            raise CorruptRecord("unknown envelope record version")
        client = d["client"]
        if not isinstance(client, list) or len(client) != 6:
            raise CorruptRecord("bad client record")
        size = d["size"]
        arrival = d["arrival"]
        if not isinstance(size, int) or not isinstance(arrival, int | float):
            raise CorruptRecord("bad size or arrival")
        return Envelope(
            sender=_str(d["sender"]),
            recipients=recipients,
            size=size,
            body_type=_opt_str(d["body_type"]),
            smtputf8=bool(d["smtputf8"]),
            ret=_opt_str(d["ret"]),
            envid=_opt_str(d["envid"]),
            client=ClientInfo(
                address=_str(client[0]),
                name=_str(client[1]),
                helo=_str(client[2]),
                protocol=_str(client[3]),
                tls=_opt_str(client[4]),
                sasl_username=_opt_str(client[5]),
            ),
            arrival=float(arrival),
        )
    except CorruptRecord:
        raise
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise CorruptRecord(str(exc)) from exc


def address_domain(address: str) -> str:
    """The domain of an address as qshape and ``--domain`` see it: what follows the last
    "@", lower-cased, without leading/trailing dots (an address without "@" is its own
    domain, as in qshape). Stored per recipient, so selection never parses in SQL."""
    return address.rpartition("@")[2].lower().strip(".")


def normalize_sender(sender: str) -> str:
    """The envelope sender as stored: "<>" (how an administrator types the null sender)
    is ""; angle brackets around an address are dropped."""
    sender = sender.strip()
    if sender.startswith("<") and sender.endswith(">"):
        sender = sender[1:-1]
    return sender


def notify_to_text(notify: tuple[str, ...] | None) -> str | None:
    return None if notify is None else ",".join(notify)


def notify_from_text(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(text.split(",")) if text else ()
