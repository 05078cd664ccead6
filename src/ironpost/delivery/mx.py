"""Route selection: a next hop (Postfix syntax) -> the ordered addresses to try.

Owns :func:`parse_nexthop` (``domain``, ``domain:port``, ``[host]``, ``[ip]:port``,
``[ipv6:addr]``; for LMTP also ``inet:host:port`` and ``unix:/path``) and
:func:`select_routes`, which applies RFC 5321 §5.1 through the :class:`Resolver` protocol.

Invariants:

* MX hosts are tried in preference order, shuffled among equal preferences with the
  injected ``random.Random``; a domain without MX records (NODATA) is its own implicit MX;
* a DNS TEMPFAIL anywhere that leaves us without routes defers (4.4.3), never bounces;
  only a definite answer bounces: NXDOMAIN (5.1.2), null MX (RFC 7505, 5.1.10), a best
  MX that is this host (5.4.6 "mail loops back to myself");
* addresses follow ``inet_protocols`` and ``smtp_address_preference`` and are cut at
  ``smtp_mx_address_limit``; a failure never raises, it is a :class:`RouteFailure`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass, field

from ironpost.delivery.transport import Disposition
from ironpost.dns.types import MxRecord, Resolver, Result, Status

_NO_ADDRESS: Result[str] = Result(Status.NODATA)  # a family we did not ask about
_SERVICES = {"smtp": 25, "lmtp": 24, "submission": 587, "smtps": 465}


class NexthopError(ValueError):
    """The next hop does not parse (a configuration error: the caller defers)."""


@dataclass(frozen=True, slots=True)
class Destination:
    """A parsed next hop. ``mx``: look up MX records for ``host``; ``unix``: a socket path."""

    host: str
    port: int
    mx: bool
    unix: str | None = None

    @property
    def literal(self) -> str | None:
        """The IP address when ``host`` is one."""
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Route:
    """One address to try, with the name it was reached by."""

    host: str
    address: str  # an IP address, or the socket path for unix:
    port: int
    preference: int = 0

    @property
    def relay(self) -> str:
        """Postfix's relay= form: ``mx.example[192.0.2.1]:25`` (``host[path]`` for unix)."""
        if self.port == 0:
            return f"{self.host}[{self.address}]"
        return f"{self.host}[{self.address}]:{self.port}"

    @property
    def peer(self) -> str:
        """``mx.example[192.0.2.1]``, as in "host X said"."""
        return f"{self.host}[{self.address}]"


@dataclass(frozen=True, slots=True)
class RouteFailure:
    disposition: Disposition  # DEFERRED or BOUNCED
    dsn: str
    text: str


@dataclass(frozen=True, slots=True)
class RouteOptions:
    ipv4: bool = True
    ipv6: bool = True
    preference: str = "any"  # smtp_address_preference: any, ipv4, ipv6
    address_limit: int = 5  # 0: no limit
    my_names: frozenset[str] = field(default_factory=frozenset)  # lowercased
    my_addresses: frozenset[str] = field(default_factory=frozenset)

    @staticmethod
    def protocols(inet_protocols: str) -> tuple[bool, bool]:
        """(ipv4, ipv6) from ``inet_protocols`` (all, ipv4, ipv6, "ipv4, ipv6")."""
        words = set(inet_protocols.replace(",", " ").lower().split())
        if not words or "all" in words:
            return True, True
        return "ipv4" in words, "ipv6" in words


def _port(text: str, default: int) -> int:
    if not text:
        return default
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    if text.lower() in _SERVICES:
        return _SERVICES[text.lower()]
    raise NexthopError(f"bad port: {text!r}")


def parse_nexthop(nexthop: str, *, default_port: int = 25, lmtp: bool = False) -> Destination:
    """Postfix next-hop syntax. In LMTP mode there are no MX lookups (as Postfix lmtp)."""
    text = nexthop.strip()
    if lmtp:
        if text.startswith("unix:"):
            path = text[5:]
            if not path:
                raise NexthopError("empty unix socket path")
            return Destination(host="localhost", port=0, mx=False, unix=path)
        if text.startswith("inet:"):
            text = text[5:]
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise NexthopError(f"unbalanced brackets: {nexthop!r}")
        host, rest = text[1:close], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise NexthopError(f"junk after brackets: {nexthop!r}")
        port = _port(rest[1:], default_port)
        if host.lower().startswith("ipv6:"):
            host = host[5:]
        mx = False
    else:
        host, _, port_text = text.partition(":")
        port = _port(port_text, default_port)
        mx = not lmtp
    host = host.rstrip(".").lower()
    if not host:
        raise NexthopError(f"empty host: {nexthop!r}")
    try:
        host = str(ipaddress.ip_address(host))
        mx = False  # an address never gets an MX lookup
    except ValueError:
        if ":" in host or any(c.isspace() for c in host):
            raise NexthopError(f"bad host: {nexthop!r}") from None
    return Destination(host=host, port=port, mx=mx)


def _defer(dsn: str, text: str) -> RouteFailure:
    return RouteFailure(Disposition.DEFERRED, dsn, text)


def _bounce(dsn: str, text: str) -> RouteFailure:
    return RouteFailure(Disposition.BOUNCED, dsn, text)


_CAUSES = {
    Status.NXDOMAIN: "Host not found",
    Status.NODATA: "No address associated with hostname",
    Status.TEMPFAIL: "Host not found, try again",
}


def _name_error(name: str, rtype: str, status: Status) -> str:
    cause = _CAUSES.get(status, "unknown error")
    return (
        f"Host or domain name not found. Name service error for name={name} type={rtype}: {cause}"
    )


async def _addresses(
    resolver: Resolver, host: str, options: RouteOptions, rng: random.Random
) -> tuple[list[str], Result[str] | None]:
    """The host's addresses in the preferred order, and the worst failed lookup (if any)."""
    if options.ipv4 and options.ipv6:
        v4, v6 = await asyncio.gather(resolver.a(host), resolver.aaaa(host))
        asked = [v4, v6]
    elif options.ipv6:
        v4, v6 = _NO_ADDRESS, await resolver.aaaa(host)
        asked = [v6]
    else:
        v4, v6 = await resolver.a(host), _NO_ADDRESS
        asked = [v4]
    four, six = list(v4.records), list(v6.records)
    pref = options.preference
    if pref == "any":
        pref = rng.choice(("ipv4", "ipv6"))
    ordered = four + six if pref == "ipv4" else six + four
    # TEMPFAIL outranks NODATA outranks NXDOMAIN: the most hopeful failure is reported.
    rank = {Status.TEMPFAIL: 0, Status.NODATA: 1, Status.NXDOMAIN: 2}
    failures = sorted((r for r in asked if not r.ok), key=lambda r: rank.get(r.status, 3))
    return ordered, (failures[0] if failures else None)


def _order_mx(records: tuple[MxRecord, ...], rng: random.Random) -> list[MxRecord]:
    shuffled = list(records)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda r: r.preference)  # stable: random among equals


async def select_routes(
    resolver: Resolver,
    dest: Destination,
    options: RouteOptions,
    rng: random.Random,
) -> tuple[list[Route], RouteFailure | None]:
    """The addresses to try in order, or (``[]``, why not)."""
    if dest.unix is not None:
        return [Route(dest.host, dest.unix, 0)], None
    literal = dest.literal
    if literal is not None:
        return [Route(literal, literal, dest.port)], None
    if not dest.mx:
        addrs, failure = await _addresses(resolver, dest.host, options, rng)
        if not addrs:
            return [], _host_failure(dest.host, failure, implicit=True)
        return _limit([Route(dest.host, a, dest.port) for a in addrs], options), None

    mx = await resolver.mx(dest.host)
    if mx.status is Status.TEMPFAIL:
        return [], _defer("4.4.3", _name_error(dest.host, "MX", mx.status))
    if mx.status is Status.NXDOMAIN:
        return [], _bounce("5.1.2", _name_error(dest.host, "MX", mx.status))
    if mx.status is Status.NODATA or not mx.records:
        records: list[MxRecord] = [MxRecord(0, dest.host)]
        implicit = True
    else:
        real = [r for r in mx.records if r.host]
        if not real:
            return [], _bounce("5.1.10", f"Domain {dest.host} does not accept mail (nullMX)")
        records = _order_mx(tuple(real), rng)
        implicit = False

    lookups = await asyncio.gather(*(_addresses(resolver, r.host, options, rng) for r in records))
    routes: list[Route] = []
    tempfail: Result[str] | None = None
    last_failure: tuple[str, Result[str] | None] = (records[0].host, None)
    for record, (addrs, failure) in zip(records, lookups, strict=True):
        if failure is not None and failure.status is Status.TEMPFAIL:
            tempfail = failure
        if not addrs:
            last_failure = (record.host, failure)
        routes.extend(Route(record.host, a, dest.port, record.preference) for a in addrs)

    routes, looped = _drop_self(routes, options)
    if looped and not routes:
        return [], _bounce("5.4.6", f"mail for {dest.host} loops back to myself")
    if not routes:
        if tempfail is not None:
            return [], _defer("4.4.3", _name_error(records[0].host, "A", tempfail.status))
        host, failure = last_failure
        if implicit:
            return [], _host_failure(host, failure, implicit=True)
        # MX records that name hosts without addresses: the domain's fault, but it may be
        # fixed; defer (Postfix logs the host lookup error and tries again later).
        status = failure.status if failure else Status.NODATA
        return [], _defer("4.4.4", _name_error(host, "A", status))
    return _limit(routes, options), None


def _host_failure(host: str, failure: Result[str] | None, *, implicit: bool) -> RouteFailure:
    status = failure.status if failure else Status.NODATA
    text = _name_error(host, "A", status)
    if status is Status.TEMPFAIL:
        return _defer("4.4.3", text)
    return _bounce("5.4.4" if implicit else "5.1.2", text)


def _drop_self(routes: list[Route], options: RouteOptions) -> tuple[list[Route], bool]:
    """RFC 5321 §5.1: drop MX hosts at or above our own preference."""
    if not options.my_names and not options.my_addresses:
        return routes, False
    mine = [
        r.preference
        for r in routes
        if r.host in options.my_names or r.address in options.my_addresses
    ]
    if not mine:
        return routes, False
    cutoff = min(mine)
    return [r for r in routes if r.preference < cutoff], True


def _limit(routes: list[Route], options: RouteOptions) -> list[Route]:
    return routes[: options.address_limit] if options.address_limit > 0 else routes
