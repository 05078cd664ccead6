"""Between the end of DATA and the queue: what Postfix's cleanup(8) and its milters do.

Owns turning a finished transaction into the bytes that are queued:

* our own users' mail (SASL-authenticated, or from ``$mynetworks``): missing ``Date:`` and
  ``Message-ID:`` added, the ``From:`` checked against the login
  (``smtpd_sasl_from_header_check``), then DKIM-signed when we hold a key for the
  From: domain;
* everyone else's mail: SPF, DKIM, ARC and DMARC checked (:mod:`ironpost.auth.inbound`),
  forged ``Authentication-Results`` removed, ours prepended; a DMARC ``p=reject`` that
  applies refuses the message.

Invariants: the body is joined once, with what goes in front of it when nothing has
to read the joined message first (our own unsigned mail: the one copy of the body), and
the transaction's chunks are dropped as it is joined, so a message waiting for its
commit is held once. A message that must be read whole first (to sign or to verify) is
joined once for that, and once more with the header lines that result. Signing and
verification (CPU, blocking DNS) run off the event loop; what we add always sits above
the client's headers, under our Received line.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ironpost.auth.arc import arc_seal
from ironpost.protocol.replies import Reply
from ironpost.routing import split_address
from ironpost.server.headers import from_addresses, missing_headers

if TYPE_CHECKING:
    from ironpost.auth.types import SpfResult
    from ironpost.server.context import ListenerContext
    from ironpost.server.transaction import Transaction


@dataclass(frozen=True, slots=True)
class Prepared:
    """The message to queue, or the reply that refuses it."""

    content: bytes = b""
    refusal: Reply | None = None
    quarantine: bool = False


@dataclass(frozen=True, slots=True)
class Origin:
    """Who handed us the message (what cleanup needs of the session)."""

    client_address: str
    client_label: str
    helo: str
    login: str | None  # SASL login, None if not authenticated
    own: bool  # authenticated or in $mynetworks: our mail, signed not checked
    spf: SpfResult | None = None  # already computed by an SPF restriction at RCPT


async def prepare(
    ctx: ListenerContext,
    tx: Transaction,
    origin: Origin,
    *,
    received: bytes,
    queue_id: str,
    arrival: float,
) -> Prepared:
    opts = ctx.options
    head = tx.head()
    added = b""
    if origin.own or opts.always_add_missing_headers:
        added = missing_headers(head, hostname=opts.hostname, queue_id=queue_id, now=arrival)
    if origin.login is not None:
        refusal = check_from_header(ctx, origin, head)
        if refusal is not None:
            return Prepared(refusal=refusal)
    loop = asyncio.get_running_loop()
    if origin.own:
        own_signer = ctx.signer
        domain = _from_domain(head) if own_signer is not None and own_signer.domains() else None
        if own_signer is not None and domain in own_signer.domains():
            signed = tx.take_content(added)  # what the signature covers
            signature = await loop.run_in_executor(
                None, lambda: own_signer.sign(signed, from_domain=domain)
            )
            return Prepared(b"".join((received, signature, signed)))
        return Prepared(tx.take_content(received, added))  # the one copy of the body
    inbound = ctx.inbound
    if inbound is None:
        return Prepared(tx.take_content(received, added))
    body = tx.take_content()
    verdict = await inbound.check(
        body,
        client_address=origin.client_address,
        helo=origin.helo,
        sender=tx.sender,
        spf=origin.spf,
        skip_dmarc=False,
    )
    if verdict.reply is not None:
        return Prepared(refusal=verdict.reply)
    forwarder = _forwarding_domain(ctx, tx)
    signer = ctx.signer
    if forwarder is None or signer is None or not signer.domains():
        return Prepared(
            b"".join((received, verdict.headers, added, verdict.content)),
            None,
            verdict.quarantine,
        )
    # Forwarded (an alias to another domain): seal with ARC (RFC 8617), so the next hop
    # can trust the results we saw before our forwarding broke SPF. The seal covers the
    # message as it leaves cleanup, so that message is joined once for it.
    message = b"".join((verdict.headers, added, verdict.content))
    results = _results_value(verdict.headers)
    seal = await loop.run_in_executor(
        None,
        lambda: arc_seal(
            message,
            signer,
            authserv_id=inbound.authserv_id,
            results=results,
            domain=forwarder if forwarder in signer.domains() else None,
        ),
    )
    return Prepared(b"".join((received, seal, message)), None, verdict.quarantine)


def _forwarding_domain(ctx: ListenerContext, tx: Transaction) -> str | None:
    """The domain of the first recipient that an alias sends on to another domain."""
    router = ctx.router
    for rcpt in tx.recipients:
        for final in rcpt.expanded:
            if final == rcpt.address:
                continue
            if not router.is_final_destination(split_address(final)[1].lower()):
                return split_address(rcpt.address)[1].lower()
    return None


def _results_value(headers: bytes) -> str:
    """Our Authentication-Results value, unfolded, from the headers inbound checks made."""
    unfolded = headers.decode("utf-8", "replace").replace("\r\n\t", " ").replace("\r\n ", " ")
    for field in unfolded.split("\r\n"):
        if field.lower().startswith("authentication-results:"):
            return field.split(":", 1)[1].strip()
    return ""


def _from_domain(head: bytes) -> str | None:
    addresses = from_addresses(head)
    if len(addresses) != 1:
        return None
    return split_address(addresses[0])[1].lower() or None


def check_from_header(ctx: ListenerContext, origin: Origin, head: bytes) -> Reply | None:
    """smtpd_sasl_from_header_check: From: must name addresses the login owns."""
    mode = ctx.options.from_header_check
    login = origin.login
    if mode == "no" or login is None:
        return None
    logins = ctx.policy.sender_logins
    for address in from_addresses(head):
        if logins.owns(login, address):
            continue
        ctx.maillog.emit(
            "cleanup",
            f"warning: From: <{address}> is not owned by sasl_username={login}"
            f" ({origin.client_label})",
        )
        if mode == "enforce":
            return Reply(
                550, "5.7.1", f"<{address}>: From: header address not owned by user {login}"
            )
    return None
