"""The dnspython implementation of :class:`ironpost.dns.types.Resolver`.

Owns talking to nameservers: choosing them (``dns_nameservers`` or /etc/resolv.conf),
turning every dnspython outcome into a typed :class:`Result`, caching by TTL, and
sharing one in-flight query between concurrent callers asking the same question.

Invariants:
- a lookup never raises for a DNS outcome: SERVFAIL, REFUSED, timeouts, unreachable
  or misbehaving servers, and unexpected library errors are all ``TEMPFAIL``;
- a syntactically invalid name (empty label, label > 63 octets, name > 253 octets,
  whitespace or control characters, bad IDN) is ``NXDOMAIN`` with ``error`` set,
  decided without any query: such a name can never exist, so it is permanent;
- names are always queried as absolute names: no search list, no ndots games;
- positive answers are cached for their TTL (capped at a day), NXDOMAIN/NODATA for
  the SOA negative TTL (RFC 2308, capped at 3 h; 60 s without SOA), TEMPFAIL for a
  few seconds only (so a dead server does not stall every caller for a full timeout);
- UDP first; a truncated reply is retried over TCP (dnspython does this when
  ``resolve(tcp=False)`` gets a TC reply).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from ironpost.config.settings import Settings
from ironpost.dns.cache import DEFAULT_MAX_ENTRIES, ResultCache
from ironpost.dns.types import MxRecord, Resolver, Result, Status
from ironpost.metrics import registry as metrics

T = TypeVar("T")
_Key = tuple[dns.rdatatype.RdataType, str]  # (type, normalized name)

EDNS_PAYLOAD = 1232  # DNS flag day 2020: avoids IP fragmentation; bigger goes over TCP
MAX_POSITIVE_TTL = 86_400
MAX_NEGATIVE_TTL = 3 * 3_600  # RFC 2308 section 5
DEFAULT_NEGATIVE_TTL = 60  # NXDOMAIN/NODATA without an SOA to say how long
DEFAULT_TEMPFAIL_TTL = 5.0
FALLBACK_NAMESERVER = "127.0.0.1"

INVALID_NAME = "invalid domain name"
INVALID_ADDRESS = "invalid IP address"

_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")

_MX = dns.rdatatype.MX
_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
_TXT = dns.rdatatype.TXT
_PTR = dns.rdatatype.PTR
_SOA = dns.rdatatype.SOA


def normalize_name(name: str) -> str | None:
    """The query form of ``name`` (lowercase ASCII, A-labels, no trailing dot), or
    None if it can never exist in the DNS."""
    if name.endswith("."):
        name = name[:-1]
    if not name:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if len(name) > 253 or _BAD_CHARS.search(name):
        return None
    name = name.lower()
    for label in name.split("."):
        if not label or len(label) > 63:
            return None
    return name


def parse_nameserver(entry: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address ->
    (address, port). The host must be an IP address. Raises ValueError."""
    host, port = entry.strip(), 53
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise ValueError(f"nameserver {entry!r}: missing ']'")
        rest = host[end + 1 :]
        host = host[1:end]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"nameserver {entry!r}: junk after ']'")
            port = _port(entry, rest[1:])
    elif host.count(":") == 1:
        host, _, text = host.partition(":")
        port = _port(entry, text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {entry!r}: not an IP address") from None
    return str(address), port


def _do53(entry: str) -> dns.nameserver.Nameserver:
    return dns.nameserver.Do53Nameserver(*parse_nameserver(entry))


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"nameserver {entry!r}: bad port {text!r}")
    return int(text)


def _negative_ttl(response: dns.message.Message | None) -> int:
    """RFC 2308: min(SOA TTL, SOA MINIMUM) from the authority section."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == _SOA and len(rrset):
                soa: Any = rrset[0]
                return min(int(rrset.ttl), int(soa.minimum), MAX_NEGATIVE_TTL)
    return DEFAULT_NEGATIVE_TTL


def _host(name: dns.name.Name) -> str:
    if name == dns.name.root:
        return ""
    return name.to_text(omit_final_dot=True).lower()


def _parse_mx(rrset: Any) -> tuple[MxRecord, ...]:
    records = [MxRecord(int(rd.preference), _host(rd.exchange)) for rd in rrset]
    # Stable sort: equal preferences keep the server's order; callers randomise them.
    records.sort(key=lambda r: r.preference)
    return tuple(records)


def _parse_address(rrset: Any) -> tuple[str, ...]:
    return tuple(rd.address for rd in rrset)


def _parse_txt(rrset: Any) -> tuple[str, ...]:
    return tuple(b"".join(rd.strings).decode("utf-8", "replace") for rd in rrset)


def _parse_ptr(rrset: Any) -> tuple[str, ...]:
    return tuple(_host(rd.target) for rd in rrset)


class DnsResolver:
    """Async stub resolver with a TTL cache; satisfies the ``Resolver`` protocol.

    ``nameservers``: ``ip``, ``ip:port``, ``[ipv6]:port`` (or dnspython ``Nameserver``
    objects, e.g. DoT); empty reads ``resolv_conf``, and 127.0.0.1 if that has none.
    ``timeout`` bounds one lookup end to end (all servers, retries, TCP fallback).
    ``clock`` drives cache expiry only; ``cache_size`` bounds the cache's entries.
    """

    def __init__(
        self,
        nameservers: Sequence[str | dns.nameserver.Nameserver] = (),
        *,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = DEFAULT_MAX_ENTRIES,
        tempfail_ttl: float = DEFAULT_TEMPFAIL_TTL,
        resolv_conf: str = "/etc/resolv.conf",
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.timeout = timeout
        self.tempfail_ttl = tempfail_ttl
        self._cache = ResultCache(clock, cache_size)
        self._inflight: dict[_Key, asyncio.Future[Result[Any]]] = {}
        servers = [
            ns if isinstance(ns, dns.nameserver.Nameserver) else _do53(ns) for ns in nameservers
        ]
        if servers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = servers
        else:
            try:
                resolver = dns.asyncresolver.Resolver(filename=resolv_conf)
            except (dns.exception.DNSException, OSError, ValueError):
                # No usable resolv.conf: a local resolver is the only safe guess, and
                # starting anyway beats refusing to run (lookups will just TEMPFAIL).
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [FALLBACK_NAMESERVER]
        resolver.search = []
        resolver.use_search_by_default = False
        resolver.lifetime = timeout
        # Per attempt: at most half the lifetime, so that a lost datagram or a dead
        # first server still leaves time to ask again or ask the next server.
        resolver.timeout = min(2.0, timeout / 2)
        resolver.use_edns(0, 0, EDNS_PAYLOAD)
        self._resolver = resolver

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> DnsResolver:
        """Build from ``dns_nameservers`` (empty: /etc/resolv.conf). ValueError if an
        entry is not ``ip``, ``ip:port`` or ``[ipv6]:port``."""
        return cls(settings.words("dns_nameservers"), **kwargs)

    @property
    def nameservers(self) -> tuple[str, ...]:
        """The servers asked, as ``address:port`` text (for logs)."""
        out = []
        for ns in self._resolver.nameservers:
            if isinstance(ns, dns.nameserver.AddressAndPortNameserver):
                host, port = ns.address, ns.port
            else:
                host, port = str(ns), self._resolver.port
            out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return tuple(out)

    @property
    def cache(self) -> ResultCache:
        return self._cache

    # --- the Resolver protocol ----------------------------------------------------------

    async def mx(self, name: str) -> Result[MxRecord]:
        return await self._lookup(name, _MX, _parse_mx)

    async def a(self, name: str) -> Result[str]:
        return await self._lookup(name, _A, _parse_address)

    async def aaaa(self, name: str) -> Result[str]:
        return await self._lookup(name, _AAAA, _parse_address)

    async def txt(self, name: str) -> Result[str]:
        return await self._lookup(name, _TXT, _parse_txt)

    async def ptr(self, address: str) -> Result[str]:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return Result(Status.NXDOMAIN, error=INVALID_ADDRESS)
        reverse = dns.reversename.from_address(str(ip)).to_text(omit_final_dot=True)
        return await self._lookup(reverse, _PTR, _parse_ptr)

    # --- machinery ----------------------------------------------------------------------

    async def _lookup(
        self, name: str, rdtype: dns.rdatatype.RdataType, parse: Callable[[Any], tuple[T, ...]]
    ) -> Result[T]:
        qname = normalize_name(name)
        if qname is None:
            return Result(Status.NXDOMAIN, error=INVALID_NAME)
        key = (rdtype, qname)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._query(key, parse))
            self._inflight[key] = future

            def _done(done: asyncio.Future[Result[Any]], key: _Key = key) -> None:
                if self._inflight.get(key) is done:
                    del self._inflight[key]

            future.add_done_callback(_done)
        # shield: one caller giving up (cancelled) must not cancel the others' lookup.
        return await asyncio.shield(future)

    async def _query(self, key: _Key, parse: Callable[[Any], tuple[Any, ...]]) -> Result[Any]:
        rdtype, qname = key
        started = time.perf_counter()
        result, ttl = await self._ask(qname, rdtype, parse)
        metrics.record_dns_lookup(rdtype.name, result.status.value, time.perf_counter() - started)
        self._cache.put(key, result, ttl)
        return result

    async def _ask(
        self, qname: str, rdtype: dns.rdatatype.RdataType, parse: Callable[[Any], tuple[Any, ...]]
    ) -> tuple[Result[Any], float]:
        """One resolution -> (result, seconds to cache it)."""
        try:
            name = dns.name.Name([label.encode("ascii") for label in qname.split(".")] + [b""])
            answer = await self._resolver.resolve(
                name, rdtype, tcp=False, search=False, lifetime=self.timeout
            )
        except dns.resolver.NXDOMAIN as exc:
            response = next(iter(exc.kwargs.get("responses", {}).values()), None)
            ttl = _negative_ttl(response)
            return Result(Status.NXDOMAIN, ttl=ttl), ttl
        except dns.resolver.NoAnswer as exc:
            ttl = _negative_ttl(exc.kwargs.get("response"))
            return Result(Status.NODATA, ttl=ttl), ttl
        except dns.resolver.LifetimeTimeout:
            return self._tempfail(f"timeout after {self.timeout:g}s")
        except dns.resolver.NoNameservers as exc:
            return self._tempfail(_servers_said(exc))
        except dns.resolver.YXDOMAIN:
            # A DNAME expansion too long: a broken zone, which its owner may fix.
            return self._tempfail("YXDOMAIN")
        except (dns.exception.DNSException, OSError) as exc:
            return self._tempfail(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # fail closed: a library surprise is not a crash
            return self._tempfail(f"unexpected {type(exc).__name__}: {exc}")
        rrset = answer.rrset
        if rrset is None or not len(rrset):
            ttl = _negative_ttl(answer.response)
            return Result(Status.NODATA, ttl=ttl), ttl
        records = parse(rrset)
        ttl = min(int(answer.chaining_result.minimum_ttl), MAX_POSITIVE_TTL)
        return Result(Status.ANSWER, records, ttl), ttl

    def _tempfail(self, error: str) -> tuple[Result[Any], float]:
        return Result(Status.TEMPFAIL, error=error), self.tempfail_ttl


def _servers_said(exc: dns.resolver.NoNameservers) -> str:
    """'127.0.0.1:53 SERVFAIL; ...' from dnspython's error trace (bounded for logs)."""
    errors = exc.kwargs.get("errors") or []
    parts = []
    for server, tcp, _port, error, _response in errors[:4]:
        text = str(error) or type(error).__name__
        parts.append(f"{server}{'/tcp' if tcp else ''} {text}")
    return "; ".join(parts) or "no nameserver answered"


def _conforms(resolver: DnsResolver) -> Resolver:
    return resolver  # mypy proves DnsResolver satisfies the Resolver protocol
