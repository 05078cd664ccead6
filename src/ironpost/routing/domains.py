"""Domain lists (mydestination, relay_domains, virtual_*_domains) and how a name matches.

Owns Postfix match_list(3) semantics for domain names: exact names, ``.example.com``
wildcards, ``/file`` entries (read once, at build), and ``type:table`` entries (looked up
with the name, then its parents). Whether a bare ``example.com`` also matches its
subdomains depends on ``parent_domain_matches_subdomains`` listing the parameter
(true by default for relay_domains and smtpd_access_maps, false for mydestination).

Invariant: matching is case-insensitive and never raises on odd input; a list is frozen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ironpost.config.tables import LookupTable
from ironpost.routing.addresses import normalize_domain

OpenTable = Callable[[str], LookupTable]

# Postfix 3.7 `postconf -d parent_domain_matches_subdomains`.
DEFAULT_PARENT_MATCH: tuple[str, ...] = (
    "debug_peer_list",
    "fast_flush_domains",
    "mynetworks",
    "permit_mx_backup_networks",
    "qmqpd_authorized_clients",
    "relay_domains",
    "smtpd_access_maps",
)


def default_open_table(spec: str) -> LookupTable:
    """``ironpost.config.tables.open_table``, imported late: config owns the table types."""
    from ironpost.config import tables

    opener: OpenTable | None = getattr(tables, "open_table", None)
    if opener is None:  # pragma: no cover - only while the config package is incomplete
        raise ValueError(f"lookup table support is not available for {spec!r}")
    return opener(spec)


def parent_domains(domain: str) -> list[str]:
    """``a.b.example.com`` → ``["b.example.com", "example.com", "com"]``."""
    out = []
    i = domain.find(".")
    while i >= 0:
        out.append(domain[i + 1 :])
        i = domain.find(".", i + 1)
    return out


@dataclass(frozen=True, slots=True)
class DomainList:
    """A mydestination-like list: names, ``.domain`` wildcards and lookup tables."""

    names: frozenset[str] = frozenset()
    wildcards: frozenset[str] = frozenset()  # stored without the leading dot
    tables: tuple[LookupTable, ...] = ()
    parent_matches_subdomains: bool = False

    @classmethod
    def build(
        cls,
        entries: Iterable[str],
        *,
        parent_matches_subdomains: bool = False,
        open_table: OpenTable = default_open_table,
    ) -> DomainList:
        """From main.cf words: ``name``, ``.name``, ``/file`` (read now), ``type:table``."""
        names: set[str] = set()
        wildcards: set[str] = set()
        tables: list[LookupTable] = []
        for entry in _expand_files(entries):
            if ":" in entry and not entry.startswith("["):
                tables.append(open_table(entry))
            elif entry.startswith("."):
                wildcards.add(normalize_domain(entry[1:]))
            elif entry:
                names.add(normalize_domain(entry))
        return cls(frozenset(names), frozenset(wildcards), tuple(tables), parent_matches_subdomains)

    def __bool__(self) -> bool:
        return bool(self.names or self.wildcards or self.tables)

    def matches(self, domain: str) -> bool:
        """True when ``domain`` (any case, optional trailing dot) is on the list."""
        d = normalize_domain(domain)
        if not d:
            return False
        if d in self.names:
            return True
        need_parents = (
            self.wildcards or self.tables or (self.parent_matches_subdomains and self.names)
        )
        parents = parent_domains(d) if need_parents else []
        for p in parents:
            if p in self.wildcards or (self.parent_matches_subdomains and p in self.names):
                return True
        for table in self.tables:
            if table.lookup(d) is not None:
                return True
            for p in parents:
                # match_hostname(): ".parent" keys unless parent style is on for this list
                key = p if self.parent_matches_subdomains else "." + p
                if table.lookup(key) is not None:
                    return True
        return False


def _expand_files(entries: Iterable[str]) -> list[str]:
    out: list[str] = []
    for entry in entries:
        if entry.startswith("/"):
            text = Path(entry).read_text(encoding="utf-8")
            for line in text.splitlines():
                line = line.split("#", 1)[0]
                out.extend(w for w in line.replace(",", " ").split() if w)
        else:
            out.append(entry)
    return out
