"""Our own names and addresses: myhostname, its PTR (FCrDNS, not generic), MX per domain.

Owns :func:`check_names` and the generic-PTR heuristic :func:`generic_reason`.
Receivers judge a sending host first by these: a PTR that does not name the host, or
that looks like a dial-up pool (``192-0-2-10.dsl.provider.net``), is reason enough to
refuse mail, whatever SPF and DKIM say.

Invariant: a DNS TEMPFAIL is never reported as the record being absent; it is a warn
("could not check"), since the zone may be fine.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from ironpost.deliverability.records import IPAddress
from ironpost.dns.types import Result, Status
from ironpost.doctor.check import Check, Inputs, failed, passed, warned

FAMILY = "names"

# Words that providers put in the names of addresses they hand out by the thousand.
_GENERIC_TOKEN = re.compile(
    r"(?:[avxs]?dsl|dyn|dynamic|dynip|pool|static|dhcp|cable|ppp|pppoe|dial|dialup|"
    r"broadband|customer|cust|unassigned|ip)\d*",
)
_LOCAL_SUFFIXES = (".localhost", ".localdomain", ".local", ".invalid", ".internal")


def generic_reason(name: str, address: IPAddress | None = None) -> str | None:
    """Why ``name`` looks like a provider's generic PTR name, or None if it does not.

    Heuristic: the address's octets appear in the name (forwards or backwards, in any
    separator, or zero-padded as 12 digits), or a token of the name is one of the words
    of generic names (dsl, dynamic, pool, static, dhcp, cable, ...), or a label starts
    with ``ip-``."""
    text = name.rstrip(".").lower()
    if isinstance(address, ipaddress.IPv4Address):
        octets = [str(o) for o in address.packed]
        digits = re.findall(r"\d+", text)
        joined = " " + " ".join(str(int(d)) for d in digits if len(d) <= 3) + " "
        forward, backward = " ".join(octets), " ".join(reversed(octets))
        if f" {forward} " in joined or f" {backward} " in joined:
            return f"it contains the address {address}"
        padded = "".join(f"{int(o):03d}" for o in octets)
        if padded in text or "".join(f"{o:02x}" for o in address.packed) in text:
            return f"it contains the address {address}"
    labels = text.split(".")
    for label in labels[:-2] or labels[:1]:
        if label.startswith("ip-"):
            return f"the label {label!r} looks assigned, not chosen"
        for token in re.split(r"[-_]", label):
            if _GENERIC_TOKEN.fullmatch(token):
                return f"the word {token!r} marks provider-assigned names"
    return None


def _is_fqdn(name: str) -> bool:
    return "." in name and not name.startswith("localhost") and not name.endswith(_LOCAL_SUFFIXES)


def _dns_problem(result: Result[Any]) -> str:
    return f"DNS temporary failure ({result.error or 'no answer'})"


async def check_names(inputs: Inputs) -> list[Check]:
    out = [await _check_hostname(inputs)]
    for address in inputs.addresses:
        out.append(await _check_ptr(inputs, address))
    for domain in inputs.domains:
        out.append(await _check_mx(inputs, domain))
    return out


async def _forward(inputs: Inputs, name: str) -> tuple[set[str], Result[str] | None]:
    """The A and AAAA addresses of ``name``; the failing result if any lookup failed."""
    found: set[str] = set()
    problem = None
    for result in (await inputs.resolver.a(name), await inputs.resolver.aaaa(name)):
        if result.status is Status.TEMPFAIL:
            problem = result
        found.update(str(ipaddress.ip_address(r)) for r in result.records)
    return found, problem


async def _check_hostname(inputs: Inputs) -> Check:
    host = inputs.hostname
    title = f"myhostname {host}"
    if not _is_fqdn(host):
        return failed(
            FAMILY,
            title,
            "not a fully qualified public name",
            "set myhostname to the host's public name (e.g. mail.example.org) in main.cf",
        )
    if not inputs.addresses:
        return failed(FAMILY, title, "no public address known to compare with", _ADDR_FIX)
    found, problem = await _forward(inputs, host)
    ours = {str(a) for a in inputs.addresses}
    if problem is not None and not found:
        return warned(FAMILY, title, _dns_problem(problem), "check the resolver, then rerun")
    missing = sorted(ours - found)
    if not found:
        return failed(
            FAMILY,
            title,
            "has no A/AAAA record",
            f"publish {host}. A/AAAA {', '.join(sorted(ours))}",
        )
    if missing:
        return failed(
            FAMILY,
            title,
            f"resolves to {', '.join(sorted(found))}, not to {', '.join(missing)}",
            f"publish {host}. A/AAAA {', '.join(sorted(ours))} (or correct --ip)",
        )
    return passed(FAMILY, title, f"resolves to {', '.join(sorted(ours))}")


_ADDR_FIX = "give --ip ADDR or set dns_records_addresses to the public address"


async def _check_ptr(inputs: Inputs, address: IPAddress) -> Check:
    title = f"PTR {address}"
    host = inputs.hostname
    result = await inputs.resolver.ptr(str(address))
    fix = f"ask the provider of {address} to set its PTR to {host}"
    if result.status is Status.TEMPFAIL:
        return warned(FAMILY, title, _dns_problem(result), "check the resolver, then rerun")
    names = [r.rstrip(".").lower() for r in result.records]
    if not names:
        return failed(FAMILY, title, "no PTR record (receivers refuse mail from it)", fix)
    for name in names:
        reason = generic_reason(name, address)
        if reason is not None:
            return failed(FAMILY, title, f"{name} is a generic name: {reason}", fix)
    if host not in names:
        return failed(FAMILY, title, f"names {', '.join(names)}, not myhostname {host}", fix)
    found, _problem = await _forward(inputs, host)
    if str(address) not in found:
        return failed(
            FAMILY,
            title,
            f"names {host}, but {host} does not resolve back to {address} (no FCrDNS)",
            f"publish {host}. A/AAAA {address}",
        )
    return passed(FAMILY, title, f"names {host}, which resolves back (FCrDNS)")


async def _check_mx(inputs: Inputs, domain: str) -> Check:
    title = f"MX {domain}"
    result = await inputs.resolver.mx(domain)
    fix = f"publish {domain}. MX 10 {inputs.hostname}."
    if result.status is Status.TEMPFAIL:
        return warned(FAMILY, title, _dns_problem(result), "check the resolver, then rerun")
    if not result.ok:
        return failed(FAMILY, title, "no MX record: mail to this domain is not routed here", fix)
    hosts = [r.host for r in result.records]
    if hosts == [""]:
        return warned(FAMILY, title, "null MX: the domain says it receives no mail", fix)
    if inputs.hostname in hosts:
        return passed(FAMILY, title, f"MX {', '.join(hosts)}")
    ours = {str(a) for a in inputs.addresses}
    for mx in hosts:
        found, _ = await _forward(inputs, mx)
        if found & ours:
            return passed(FAMILY, title, f"MX {mx} points at this host")
    return warned(
        FAMILY,
        title,
        f"MX {', '.join(hosts)}: none is this host (a filtering service in front?)",
        fix + " unless another host receives this domain's mail on purpose",
    )
