"""``mynetworks``-style client address lists: :class:`NetworkList`.

Owns parsing of the entries Postfix accepts (``1.2.3.0/24``, ``1.2.3.4``, ``[::1]/128``,
``::1``, ``/file``, ``type:table``) and fast membership tests for a client IP.

Invariants: networks are parsed once (ipaddress objects, host bits tolerated as Postfix
does); a bad entry fails at build with the entry named; hostnames are ignored with a
warning (Postfix would need DNS per connection). ``contains`` never raises and caches
per address string. IPv4-mapped IPv6 clients (``::ffff:1.2.3.4``) match IPv4 networks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from pathlib import Path

from ironpost.config.tables import LookupTable
from ironpost.routing.domains import OpenTable, default_open_table

_CACHE_MAX = 4096
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetworkList:
    __slots__ = ("_cache", "_tables", "_v4", "_v6")

    def __init__(
        self, networks: Iterable[Network] = (), tables: Iterable[LookupTable] = ()
    ) -> None:
        nets = list(networks)
        self._v4 = tuple(n for n in nets if isinstance(n, ipaddress.IPv4Network))
        self._v6 = tuple(n for n in nets if isinstance(n, ipaddress.IPv6Network))
        self._tables = tuple(tables)
        self._cache: dict[str, bool] = {}

    @classmethod
    def build(
        cls,
        entries: Iterable[str],
        *,
        open_table: OpenTable = default_open_table,
        warn: Callable[[str], None] | None = None,
    ) -> NetworkList:
        networks: list[Network] = []
        tables: list[LookupTable] = []
        for entry in _expand_files(entries):
            net = parse_network(entry)
            if net is not None:
                networks.append(net)
            elif entry.startswith("!"):
                raise ValueError(f"mynetworks: negated entry {entry!r} is not supported")
            elif ":" in entry and entry.split(":", 1)[0].isalpha():
                tables.append(open_table(entry))
            elif entry.startswith("[") or (entry[:1].isdigit() and "/" in entry):
                raise ValueError(f"mynetworks: invalid network {entry!r}")
            elif warn is not None:
                warn(f"mynetworks: hostname {entry!r} ignored (use addresses)")
        return cls(networks, tables)

    def __bool__(self) -> bool:
        return bool(self._v4 or self._v6 or self._tables)

    def contains(self, ip: str) -> bool:
        hit = self._cache.get(ip)
        if hit is None:
            hit = self._match(ip)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[ip] = hit
        return hit

    def _match(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address):
            mapped = addr.ipv4_mapped
            if any(addr in n for n in self._v6):
                return True
            if mapped is not None and any(mapped in n for n in self._v4):
                return True
        elif any(addr in n for n in self._v4):
            return True
        if self._tables:
            key = addr.compressed
            return any(t.lookup(key) is not None for t in self._tables)
        return False


def parse_network(entry: str) -> Network | None:
    """``1.2.3.0/24``, ``1.2.3.4``, ``[::1]/128``, ``[::1]`` → network; None if not one."""
    text = entry
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        text = text[1:close] + text[close + 1 :]
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _expand_files(entries: Iterable[str]) -> list[str]:
    out: list[str] = []
    for entry in entries:
        if entry.startswith("/"):
            for line in Path(entry).read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0]
                out.extend(w for w in line.replace(",", " ").split() if w)
        elif entry:
            out.append(entry)
    return out
