"""Reputation: our addresses are on none of the DNSBLs we use, and the resolver can ask.

Owns :func:`check_reputation`, :func:`dnsbl_domains` (the lists named by
``reject_rbl_client`` in any restriction list of any listener, plus
``maps_rbl_domains`` for ``reject_maps_rbl``; ``zen.spamhaus.org`` when none is
configured) and :data:`PUBLIC_RESOLVERS`.

Spamhaus answers queries that come through large public resolvers with an error code
(127.255.255.254) instead of data, so a server behind 8.8.8.8 silently never blocks
anything. The error codes (127.255.255.252/254/255, as ``policy.dnsbl`` treats them)
are reported as "query refused", never as a listing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from ironpost.config import Settings
from ironpost.config.restrictions import RestrictionError, parse_dnsxl_argument, parse_restrictions
from ironpost.dns.resolver import parse_nameserver
from ironpost.dns.types import Status
from ironpost.doctor.check import Check, Inputs, failed, passed, warned
from ironpost.policy.dnsbl import ERROR_ANSWERS, reversed_address
from ironpost.policy.verdicts import Stage

FAMILY = "reputation"
DEFAULT_DNSBL = "zen.spamhaus.org"

#: Well-known public resolvers (Google, Cloudflare, Quad9, OpenDNS, Level3/Verisign,
#: CleanBrowsing, AdGuard, Yandex, Comodo), which DNSBL operators refuse.
PUBLIC_RESOLVERS = frozenset(
    {
        "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "1.1.1.2", "1.0.0.2", "1.1.1.3",
        "1.0.0.3", "9.9.9.9", "149.112.112.112", "9.9.9.10", "9.9.9.11",
        "208.67.222.222", "208.67.220.220", "208.67.222.123", "208.67.220.123",
        "4.2.2.1", "4.2.2.2", "64.6.64.6", "64.6.65.6", "185.228.168.9",
        "185.228.169.9", "94.140.14.14", "94.140.15.15", "77.88.8.8", "77.88.8.1",
        "8.26.56.26", "8.20.247.20", "76.76.2.0", "76.76.10.0",
        "2001:4860:4860::8888", "2001:4860:4860::8844", "2606:4700:4700::1111",
        "2606:4700:4700::1001", "2620:fe::fe", "2620:fe::9", "2620:119:35::35",
        "2620:119:53::53", "2a10:50c0::ad1:ff", "2a10:50c0::ad2:ff",
    }
)  # fmt: skip


def dnsbl_domains(settings: Iterable[Settings]) -> list[tuple[str, str]]:
    """``(argument as written, list domain)`` of every client DNSBL in use, in order."""
    found: dict[str, str] = {}
    for s in settings:
        for stage in Stage:
            try:
                steps = parse_restrictions(
                    s.words(stage.value), classes=s.words("smtpd_restriction_classes")
                )
            except (RestrictionError, KeyError):
                continue
            for name, args in steps:
                if name == "reject_rbl_client" and args:
                    found.setdefault(args[0], args[0])
                elif name == "reject_maps_rbl":
                    for domain in s.words("maps_rbl_domains"):
                        found.setdefault(domain, domain)
    out = []
    for arg in found:
        try:
            domain, _pattern = parse_dnsxl_argument(arg)
        except ValueError:
            continue
        out.append((arg, domain))
    return out


def public_resolvers(nameservers: Sequence[str]) -> list[str]:
    """The entries of ``nameservers`` (``ip``, ``ip:port``…) that are public resolvers."""
    out = []
    for entry in nameservers:
        try:
            host, _port = parse_nameserver(entry)
        except ValueError:
            continue
        if str(ipaddress.ip_address(host)) in PUBLIC_RESOLVERS:
            out.append(host)
    return out


async def check_reputation(inputs: Inputs) -> list[Check]:
    out = [_check_resolver(inputs)]
    configured = [s.settings for s in inputs.services] or [inputs.settings]
    lists = dnsbl_domains(configured) or [(DEFAULT_DNSBL, DEFAULT_DNSBL)]
    for address in inputs.addresses:
        for arg, domain in lists:
            out.append(await _check_listing(inputs, str(address), arg, domain))
    return out


def _check_resolver(inputs: Inputs) -> Check:
    title = "resolver"
    servers = ", ".join(inputs.nameservers) or "(none)"
    public = public_resolvers(inputs.nameservers)
    if public:
        return warned(
            FAMILY,
            title,
            f"{', '.join(public)} is a public resolver: Spamhaus and other DNSBLs refuse "
            "its queries, so every DNSBL lookup silently fails",
            "run a local resolver (unbound) and point dns_nameservers (or resolv.conf) at it",
        )
    return passed(FAMILY, title, f"{servers}: not a known public resolver")


async def _check_listing(inputs: Inputs, address: str, arg: str, domain: str) -> Check:
    title = f"DNSBL {domain} {address}"
    reverse = reversed_address(address)
    if reverse is None:
        return warned(FAMILY, title, "not an address", "check --ip")
    query = f"{reverse}.{domain}"
    result = await inputs.resolver.a(query)
    if result.status is Status.TEMPFAIL:
        return warned(
            FAMILY,
            title,
            f"no answer ({result.error or 'temporary failure'}): the list cannot be checked",
            "check that the resolver can reach the list's servers",
        )
    if not result.ok:
        return passed(FAMILY, title, "not listed")
    errors = [a for a in result.records if a in ERROR_ANSWERS]
    if errors:
        return warned(
            FAMILY,
            title,
            f"query refused: your resolver is blocked ({domain} answered {errors[0]})",
            "use a local resolver (unbound) that asks the lists' servers directly, "
            "or a DNSBL subscription (DQS)",
        )
    _domain, pattern = parse_dnsxl_argument(arg)
    listed = [a for a in result.records if _loopback(a) and (pattern is None or pattern.matches(a))]
    if not listed:
        return passed(FAMILY, title, f"not listed (answered {', '.join(result.records)})")
    reason = await inputs.resolver.txt(query)
    why = f": {reason.records[0][:200]}" if reason.ok and reason.records else ""
    return failed(
        FAMILY,
        title,
        f"{address} is listed ({', '.join(listed)}){why}",
        f"find and stop the cause, then ask {domain} for delisting (see its lookup page)",
    )


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        return False
