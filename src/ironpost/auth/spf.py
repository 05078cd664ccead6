"""SPF verification (RFC 7208) with pyspf, every DNS query through ironpost's resolver.

Owns :func:`check_spf` and the pyspf DNS hook. pyspf calls one module-global function,
``spf.DNSLookup(name, qtype, strict, timeout)``, for every query; importing this module
replaces it with :func:`_dns_lookup`, which answers from the :class:`BlockingDns` bound to
the *current thread* by the check running there (a ``threading.local``). Several checks
may therefore run at once in different worker threads, each on its own resolver.

Invariants:
- pyspf's own DNS code is never used: a query from a thread with no check bound is a
  temperror, not a lookup through /etc/resolv.conf;
- limits are RFC 7208 §4.6.4's: 10 DNS-mechanism lookups and 2 void lookups (pyspf's
  ``MAX_LOOKUP``/``MAX_VOID_LOOKUPS`` in strict mode), exceeding either is permerror;
- the whole check has a hard deadline: past it every query fails and the result is
  temperror; a temperror never becomes a 5xx by itself;
- :func:`check_spf` never raises for anything the peer or the DNS can do: permerror is a
  result (bad addresses, bad records, pyspf bugs included).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import dns.exception
import dns.name
import dns.reversename
import spf  # type: ignore[import-untyped]

from ironpost.auth.dnsbridge import BlockingDns
from ironpost.auth.types import SpfResult
from ironpost.dns.types import Result, Status

#: Default deadline of one whole check, in seconds (RFC 7208 §4.6.4: at least 20 s).
SPF_TIMEOUT = 20.0

# RFC 7208 §4.6.4 processing limits; pyspf enforces them, we only make sure they are set.
spf.MAX_LOOKUP = 10
spf.MAX_VOID_LOOKUPS = 2

RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})

# A domain SPF can be evaluated for: LDH labels, at least two of them (RFC 7208 §4.3).
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


@dataclass(slots=True)
class _Binding:
    dns: BlockingDns
    deadline: float  # time.monotonic()


_bound = threading.local()


def _reverse_to_address(name: str) -> str | None:
    """``4.3.2.1.in-addr.arpa`` → ``1.2.3.4`` (pyspf asks PTR by reverse name)."""
    try:
        return str(dns.reversename.to_address(dns.name.from_text(name)))
    except (dns.exception.DNSException, ValueError):
        return None


def _check_status(result: Result[Any], name: str) -> bool:
    """True if there are records; [] for NXDOMAIN/NODATA; TempError for TEMPFAIL."""
    if result.status is Status.TEMPFAIL:
        raise spf.TempError(f"DNS {result.error or 'temporary failure'} looking up {name}")
    return result.status is Status.ANSWER


def _dns_lookup(
    name: str, qtype: str, strict: object = True, timeout: float = 0.0
) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup: ``[((name, qtype), value), ...]`` in the shapes pyspf expects
    from its dnspython driver (A/AAAA/PTR: text, MX: (pref, host), TXT: tuple of bytes)."""
    binding: _Binding | None = getattr(_bound, "binding", None)
    if binding is None:
        raise spf.TempError("DNS: no resolver bound to this SPF check")
    if time.monotonic() > binding.deadline:
        raise spf.TempError("DNS: SPF check time limit exceeded")
    blocking = binding.dns
    key = (name, qtype)
    if qtype == "TXT":
        txt = blocking.txt(name)
        if not _check_status(txt, name):
            return []
        return [(key, (record.encode("utf-8"),)) for record in txt.records]
    if qtype in ("A", "AAAA"):
        addresses = blocking.a(name) if qtype == "A" else blocking.aaaa(name)
        if not _check_status(addresses, name):
            return []
        return [(key, address) for address in addresses.records]
    if qtype == "MX":
        mx = blocking.mx(name)
        if not _check_status(mx, name):
            return []
        return [(key, (record.preference, record.host)) for record in mx.records]
    if qtype == "PTR":
        address = _reverse_to_address(name)
        if address is None:
            return []
        ptr = blocking.ptr(address)
        if not _check_status(ptr, name):
            return []
        return [(key, host) for host in ptr.records]
    return []  # type SPF (99) is only asked in pyspf's "harsh" mode, which we never use


spf.DNSLookup = _dns_lookup


def _identity(sender: str, helo: str) -> tuple[str, str]:
    """``(identity, domain)`` that check_host() evaluates (RFC 7208 §2.3, §2.4)."""
    if sender:
        domain = sender.rpartition("@")[2] if "@" in sender else helo
        return "mailfrom", domain.rstrip(".").lower()
    return "helo", helo.rstrip(".").lower()


def _evaluate(
    blocking: BlockingDns, ip: str, sender: str, helo: str, deadline: float, receiver: str
) -> tuple[str, str, str]:
    """Run pyspf (blocking, in a worker thread): ``(result, explanation, mechanism)``."""
    _bound.binding = _Binding(blocking, deadline)
    try:
        query = spf.query(ip, sender, helo, receiver=receiver, strict=True)
        result, _code, explanation = query.check()
        mechanism = getattr(query, "mechanism", None) or ""
        return str(result), str(explanation), str(mechanism)
    except spf.TempError as exc:
        return "temperror", f"SPF Temporary Error: {exc}", ""
    except spf.PermError as exc:
        return "permerror", f"SPF Permanent Error: {exc}", ""
    except Exception as exc:  # a pyspf bug must not kill the session: fail as permerror
        return "permerror", f"SPF Permanent Error: {type(exc).__name__}", ""
    finally:
        _bound.binding = None


@lru_cache(maxsize=1024)  # a client sends many messages; ipaddress parsing is not cheap
def _client(ip: str) -> str | None:
    """The client address in canonical text (IPv4-mapped IPv6 as IPv4); None if invalid."""
    try:
        address = ipaddress.ip_address(ip.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


@dataclass(frozen=True, slots=True)
class SpfQuery:
    """A check ready to run in a worker: what pyspf gets (see :func:`prepare_spf`)."""

    client: str
    sender: str  # as pyspf wants it: "" for a HELO check, postmaster@domain if bare
    domain: str
    identity: str


def prepare_spf(ip: str, sender: str, helo: str) -> SpfQuery | SpfResult:
    """The identity to check, or the result when there is nothing to ask the DNS."""
    identity, domain = _identity(sender, helo)
    client = _client(ip)
    if client is None:
        return SpfResult("permerror", domain, identity, ip, "invalid client address")
    if not _DOMAIN.match(domain):
        # Address literals, single labels, empty HELO: nothing SPF can evaluate (§4.3).
        return SpfResult("none", domain, identity, client, "no valid domain to check")
    if identity == "helo":
        sender = ""
    elif "@" not in sender:
        sender = f"postmaster@{domain}"
    return SpfQuery(client, sender, domain, identity)


def run_spf(dns: BlockingDns, query: SpfQuery, *, deadline: float, receiver: str) -> SpfResult:
    """check_host() in the calling (worker) thread; queries go through ``dns``; no query
    starts after ``deadline`` (``time.monotonic()``). Never raises."""
    result, explanation, mechanism = _evaluate(
        dns, query.client, query.sender, query.domain, deadline, receiver
    )
    if result not in RESULTS:  # "ambiguous" exists only in harsh mode; be safe anyway
        result = "permerror"
    if result in ("pass", "neutral", "none"):
        explanation = ""  # pyspf's stock phrases; only refusals and errors need a text
    return SpfResult(result, query.domain, query.identity, query.client, explanation, mechanism)


def timed_out(query: SpfQuery) -> SpfResult:
    """The result of a check that overran its deadline."""
    return SpfResult("temperror", query.domain, query.identity, query.client, "SPF check timed out")


async def check_spf(
    dns: BlockingDns,
    ip: str,
    sender: str,
    helo: str,
    *,
    timeout: float = SPF_TIMEOUT,
    receiver: str = "unknown",
) -> SpfResult:
    """check_host() for the MAIL FROM identity, or the HELO identity for the null sender.

    ``sender`` is the MAIL FROM address without brackets (``""`` for ``<>``). The check
    runs pyspf in a worker thread; its queries go through ``dns``. It never raises.
    """
    query = prepare_spf(ip, sender, helo)
    if isinstance(query, SpfResult):
        return query
    deadline = time.monotonic() + timeout
    work = asyncio.to_thread(run_spf, dns, query, deadline=deadline, receiver=receiver)
    try:
        return await asyncio.wait_for(work, timeout + 1.0)
    except TimeoutError:
        # The worker stops at its next query (deadline passed); we do not wait for it.
        return timed_out(query)
