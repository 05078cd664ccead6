"""DNS existence checks: the reject_unknown_* family.

Owns whether a client, HELO name or address domain "exists" in the DNS, with Postfix's
replies (smtpd_check.c, Postfix 3.7):

- client: reject_unknown_client_hostname (alias reject_unknown_client) needs a
  forward-confirmed name, reject_unknown_reverse_client_hostname a PTR name; both read
  what :mod:`ironpost.policy.client_names` found at connect. ironpost's own
  reject_unknown_forward_client_hostname refuses only a PTR name that does not
  forward-confirm (a client without any PTR passes it).
- HELO: reject_unknown_helo_hostname (alias reject_unknown_hostname): A, AAAA or MX.
- sender/recipient domain: MX, else A/AAAA; a null MX (RFC 7505) is refused with
  550 5.7.27 (sender) or 556 5.1.10 (recipient). Our own domains (local, virtual) and
  address literals are never looked up.

Invariants: a DNS TEMPFAIL never produces a 5xx: it answers 450 whatever the
``*_reject_code`` (``*_tempfail_action``: see :func:`_tempfail`); without a resolver
(unit tests) every check here answers DUNNO.
"""

from __future__ import annotations

import asyncio

from ironpost.dns.types import Resolver, Status
from ironpost.policy.context import PolicyContext
from ironpost.policy.registry import restriction
from ironpost.policy.verdicts import Decision, Verdict
from ironpost.routing.router import FINAL_CLASSES, literal_address

_FOUND = "found"
_NOT_FOUND = "not found"
_NULL_MX = "null MX"


def _dunno(name: str) -> Decision:
    return Decision(Verdict.DUNNO, None, name)


def _fix(code: int, enhanced: str) -> str:
    """The enhanced status's class digit follows the reply code (smtpd_check_reject)."""
    return f"{str(code)[0]}{enhanced[1:]}"


def _tempfail(
    ctx: PolicyContext, name: str, action: str, text: str, target: tuple[str, str], enhanced: str
) -> Decision:
    """A DNS TEMPFAIL: always 450.

    Postfix's default action, defer_if_permit, keeps evaluating and defers only if the
    request would otherwise be accepted (a later REJECT still wins). ironpost's engine
    has no deferred-verdict state yet, so both ``defer`` and ``defer_if_permit`` defer
    now: the client gets the same 450 unless a later restriction would have sent a 5xx.
    """
    del action  # both values behave the same here; see the docstring
    return ctx.refuse(name, 450, _fix(450, enhanced), text, target=target)


# -- client names -------------------------------------------------------------------------


def _client_refusal(
    ctx: PolicyContext, name: str, status: str, enhanced: str, text: str
) -> Decision:
    code = ctx.params.unknown_client_reject_code if status != "tempfail" else 450
    return ctx.refuse_plain(
        name, code, _fix(code, enhanced), f"Client host rejected: {text}, [{ctx.client_address}]"
    )


@restriction("reject_unknown_client_hostname", "reject_unknown_client")
def reject_unknown_client_hostname(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    name = "reject_unknown_client_hostname"
    if ctx.client_name_status == "ok":
        return _dunno(name)
    # RFC 7372 code, as Postfix 3.1 and later.
    return _client_refusal(ctx, name, ctx.client_name_status, "4.7.25", "cannot find your hostname")


@restriction("reject_unknown_reverse_client_hostname")
def reject_unknown_reverse_client_hostname(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    name = "reject_unknown_reverse_client_hostname"
    status = ctx.reverse_client_name_status
    if status == "ok":
        return _dunno(name)
    return _client_refusal(ctx, name, status, "4.7.1", "cannot find your reverse hostname")


@restriction("reject_unknown_forward_client_hostname")
def reject_unknown_forward_client_hostname(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    """ironpost's own: a PTR name exists but does not resolve back to the client."""
    name = "reject_unknown_forward_client_hostname"
    if ctx.reverse_client_name_status != "ok" or ctx.client_name_status == "ok":
        return _dunno(name)
    return _client_refusal(ctx, name, ctx.client_name_status, "4.7.25", "cannot find your hostname")


# -- lookups ------------------------------------------------------------------------------


async def _host_exists(resolver: Resolver, host: str) -> tuple[str, bool]:
    """reject_unknown_helo_hostname's lookup: A/AAAA (in parallel), then MX.

    Returns ``(outcome, tempfailed)``; a null MX counts as found (an MTA's own name
    may publish one).
    """
    a, aaaa = await asyncio.gather(resolver.a(host), resolver.aaaa(host))
    if a.ok or aaaa.ok:
        return _FOUND, False
    tempfail = Status.TEMPFAIL in (a.status, aaaa.status)
    if a.status is Status.NXDOMAIN and aaaa.status is Status.NXDOMAIN:
        return _NOT_FOUND, False
    mx = await resolver.mx(host)
    if mx.ok:
        return _FOUND, False
    return _NOT_FOUND, tempfail or mx.status is Status.TEMPFAIL


async def _mail_domain_exists(resolver: Resolver, domain: str) -> tuple[str, bool]:
    """reject_unknown_*_domain's lookup: MX, else A/AAAA (in parallel)."""
    mx = await resolver.mx(domain)
    if mx.ok:
        if all(r.host == "" for r in mx.records):
            return _NULL_MX, False
        return _FOUND, False
    if mx.status is Status.NXDOMAIN:
        return _NOT_FOUND, False
    a, aaaa = await asyncio.gather(resolver.a(domain), resolver.aaaa(domain))
    if a.ok or aaaa.ok:
        return _FOUND, False
    return _NOT_FOUND, Status.TEMPFAIL in (mx.status, a.status, aaaa.status)


# -- HELO ---------------------------------------------------------------------------------


@restriction("reject_unknown_helo_hostname", "reject_unknown_hostname")
async def reject_unknown_helo_hostname(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    name = "reject_unknown_helo_hostname"
    helo, resolver = ctx.helo, ctx.resolver
    if not helo or resolver is None:
        return _dunno(name)
    target = (helo, "Helo command")
    if helo.startswith("["):
        if literal_address(helo) is not None:
            return _dunno(name)
        code = ctx.params.invalid_hostname_reject_code
        return ctx.refuse(name, code, _fix(code, "5.5.2"), "invalid ip address", target=target)
    outcome, tempfail = await _host_exists(resolver, helo)
    if outcome == _FOUND:
        return _dunno(name)
    if tempfail:
        action = ctx.params.unknown_helo_hostname_tempfail_action
        return _tempfail(ctx, name, action, "Host not found", target, "4.7.1")
    code = ctx.params.unknown_hostname_reject_code
    return ctx.refuse(name, code, _fix(code, "4.7.1"), "Host not found", target=target)


# -- sender and recipient domains -----------------------------------------------------------


async def _unknown_address(
    ctx: PolicyContext, name: str, address: str | None, domain: str, klass: str, sender: bool
) -> Decision:
    resolver = ctx.resolver
    if not address or not domain or resolver is None or domain.startswith("["):
        return _dunno(name)
    if (
        ctx.router.domain_class(domain) in FINAL_CLASSES
    ):  # Postfix's RESOLVE_CLASS_FINAL: no DNS needed
        return _dunno(name)
    outcome, tempfail = await _mail_domain_exists(resolver, domain)
    if outcome == _FOUND:
        return _dunno(name)
    target = (address, klass)
    if outcome == _NULL_MX:
        code, enhanced = (550, "5.7.27") if sender else (556, "5.1.10")
        text = f"Domain {domain} does not accept mail (nullMX)"
        return ctx.refuse(name, code, enhanced, text, target=target)
    enhanced = "4.1.8" if sender else "4.1.2"
    if tempfail:
        action = ctx.params.unknown_address_tempfail_action
        return _tempfail(ctx, name, action, "Domain not found", target, enhanced)
    code = ctx.params.unknown_address_reject_code
    return ctx.refuse(name, code, _fix(code, enhanced), "Domain not found", target=target)


@restriction("reject_unknown_sender_domain")
async def reject_unknown_sender_domain(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await _unknown_address(
        ctx, "reject_unknown_sender_domain", ctx.sender, ctx.sender_domain, "Sender address", True
    )


@restriction("reject_unknown_recipient_domain", per_recipient=True)
async def reject_unknown_recipient_domain(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await _unknown_address(
        ctx,
        "reject_unknown_recipient_domain",
        ctx.recipient,
        ctx.recipient_domain,
        "Recipient address",
        False,
    )
