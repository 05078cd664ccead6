"""The SMTP client's host names: the PTR name and the forward-confirmed (FCrDNS) name.

Owns :func:`lookup_client_names`, run once per connection by the server, and
:func:`apply`, which stores the result in a :class:`PolicyContext`. Postfix's rules
(smtpd_peer.c): the PTR name is the *reverse* name; it becomes the client's *name* only
if one of its A/AAAA records gives the client address back, otherwise the name is
``unknown``. Restrictions read the statuses: ``ok``, ``unknown`` (no such name: a
permanent condition) or ``tempfail`` (DNS failed: any refusal must be 4xx).

Invariants:
- bounded work: at most :data:`MAX_PTR_NAMES` PTR names are considered, and their
  forward lookups run in parallel; each lookup's timeout is the resolver's;
- never raises for a DNS outcome or a malformed address (the resolver's contract);
- a name that is not a syntactically valid host name is never used (a PTR record is
  attacker-controlled text that ends up in logs and Received headers).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from ironpost.dns.types import Resolver, Result, Status
from ironpost.policy.context import PolicyContext
from ironpost.policy.helo import valid_hostname

#: PTR names tried for forward confirmation (a reverse zone may list many).
MAX_PTR_NAMES = 4

OK = "ok"
UNKNOWN = "unknown"
TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class ClientNames:
    """The outcome of both lookups; ``unknown`` stands for "no name", as in Postfix."""

    name: str = UNKNOWN
    reverse_name: str = UNKNOWN
    name_status: str = UNKNOWN
    reverse_status: str = UNKNOWN


def _warn_nothing(text: str) -> None:
    return None


async def lookup_client_names(
    resolver: Resolver,
    address: str,
    *,
    log_warning: Callable[[str], None] = _warn_nothing,
) -> ClientNames:
    """PTR, then A/AAAA of the PTR names; see the module docstring for the rules.

    ``log_warning`` receives Postfix's warnings ("hostname X does not resolve to
    address Y") for the maillog.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ClientNames()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    ptr = await resolver.ptr(str(ip))
    if ptr.status is Status.TEMPFAIL:
        return ClientNames(name_status=TEMPFAIL, reverse_status=TEMPFAIL)
    names: list[str] = []
    for record in ptr.records if ptr.ok else ():
        name = record.rstrip(".").lower()
        if valid_hostname(name) and name not in names:
            names.append(name)
            if len(names) == MAX_PTR_NAMES:
                break
    if not names:
        if ptr.ok:
            log_warning(f"{ip}: PTR names are not valid hostnames")
        return ClientNames()
    reverse = names[0]
    forward = resolver.aaaa if ip.version == 6 else resolver.a
    answers: list[Result[str]] = await asyncio.gather(*(forward(n) for n in names))
    tempfail = False
    for name, answer in zip(names, answers, strict=True):
        if answer.ok and any(_same(ip, a) for a in answer.records):
            return ClientNames(name, reverse, OK, OK)
        tempfail = tempfail or answer.status is Status.TEMPFAIL
    if tempfail:
        log_warning(f"{reverse}: hostname lookup failed temporarily for address {ip}")
        return ClientNames(UNKNOWN, reverse, TEMPFAIL, OK)
    log_warning(f"hostname {reverse} does not resolve to address {ip}")
    return ClientNames(UNKNOWN, reverse, UNKNOWN, OK)


def _same(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False


def apply(ctx: PolicyContext, names: ClientNames) -> None:
    """Store ``names`` in ``ctx`` (cached list results depended on the old names)."""
    ctx.client_name = names.name
    ctx.reverse_client_name = names.reverse_name
    ctx.client_name_status = names.name_status
    ctx.reverse_client_name_status = names.reverse_status
    ctx.list_cache.clear()
