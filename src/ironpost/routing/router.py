"""Recipient routing: address classes, recipient validation, alias expansion, resolution.

Owns what Postfix splits over trivial-rewrite(8) (address class of a domain, the resolve
loop), smtpd's check_rcpt_maps (is this recipient known?), cleanup's virtual alias
expansion plus local(8)'s aliases, and virtual(8)'s mailbox lookup (where does it land?).

Invariants:
- Relay decisions see the *final* domain (:meth:`Router.final_destination`), never the
  domain as written, so ``user%remote@ours`` and friends cannot open a relay.
- A mailbox path taken from a table never leaves ``virtual_mailbox_base``.
- The per-recipient path is table lookups on lowercased keys plus a domain-class cache;
  no regular expressions.
- ironpost has no unix accounts: a LOCAL (mydestination) recipient is delivered to the
  Maildir ``virtual_mailbox_base/<localpart>/`` unless local_recipient_maps gives a
  value ending in ``/`` (a relative Maildir path, like virtual_mailbox_maps).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from ironpost.config.tables import LookupTable
from ironpost.routing.addresses import (
    add_extension,
    is_special_destination,
    normalize_domain,
    parse_targets,
    resolve_route,
    split_address,
    split_extension,
)
from ironpost.routing.domains import DEFAULT_PARENT_MATCH, DomainList, OpenTable, default_open_table
from ironpost.routing.settings import SettingsLike, optional
from ironpost.routing.transports import Agent, Route, TransportConfig, TransportSelector

_CLASS_CACHE_MAX = 8192
_NO_WORDS: tuple[str, ...] = ()


class AddressClass(StrEnum):
    LOCAL = "local"
    VIRTUAL_ALIAS = "virtual_alias"
    VIRTUAL_MAILBOX = "virtual_mailbox"
    RELAY = "relay"
    DEFAULT = "default"


FINAL_CLASSES = frozenset(
    {AddressClass.LOCAL, AddressClass.VIRTUAL_ALIAS, AddressClass.VIRTUAL_MAILBOX}
)


class ExpansionLimitError(Exception):
    """Alias expansion looped or exceeded its limits: defer the message (Postfix does)."""


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    mydestination: DomainList
    virtual_alias_domains: DomainList
    virtual_mailbox_domains: DomainList
    relay_domains: DomainList
    virtual_alias_maps: tuple[LookupTable, ...]
    virtual_mailbox_maps: tuple[LookupTable, ...]
    alias_maps: tuple[LookupTable, ...]
    local_recipient_maps: tuple[LookupTable, ...]
    virtual_mailbox_base: Path
    recipient_delimiter: str
    allow_percent_hack: bool
    swap_bangpath: bool
    myorigin: str
    myhostname: str
    # [ip] literals that are us (inet_interfaces / proxy_interfaces), compressed form.
    local_addresses: frozenset[str] = frozenset()
    virtual_alias_recursion_limit: int = 1000
    virtual_alias_expansion_limit: int = 1000
    transports: TransportConfig | None = None  # None: Postfix's defaults, no tables

    @classmethod
    def from_settings(
        cls, settings: SettingsLike, *, open_table: OpenTable | None = None
    ) -> RoutingConfig:
        """``open_table`` defaults to ``settings.table`` (shared, config-relative) if present."""
        opener: OpenTable = open_table or getattr(settings, "table", None) or default_open_table
        parent = set(
            optional(settings.words, "parent_domain_matches_subdomains", DEFAULT_PARENT_MATCH)
        )

        def domains(name: str) -> DomainList:
            return DomainList.build(
                settings.words(name),
                parent_matches_subdomains=name in parent,
                open_table=opener,
            )

        interfaces = (
            *settings.words("inet_interfaces"),
            *optional(settings.words, "proxy_interfaces", _NO_WORDS),
        )
        return cls(
            mydestination=domains("mydestination"),
            virtual_alias_domains=domains("virtual_alias_domains"),
            virtual_mailbox_domains=domains("virtual_mailbox_domains"),
            relay_domains=domains("relay_domains"),
            virtual_alias_maps=settings.tables("virtual_alias_maps"),
            virtual_mailbox_maps=settings.tables("virtual_mailbox_maps"),
            alias_maps=settings.tables("alias_maps"),
            local_recipient_maps=settings.tables("local_recipient_maps"),
            virtual_mailbox_base=Path(settings.text("virtual_mailbox_base")),
            recipient_delimiter=settings.text("recipient_delimiter"),
            allow_percent_hack=settings.boolean("allow_percent_hack"),
            swap_bangpath=settings.boolean("swap_bangpath"),
            myorigin=normalize_domain(settings.text("myorigin")),
            myhostname=normalize_domain(settings.text("myhostname")),
            local_addresses=interface_addresses(interfaces),
            virtual_alias_recursion_limit=optional(
                settings.integer, "virtual_alias_recursion_limit", 1000
            ),
            virtual_alias_expansion_limit=optional(
                settings.integer, "virtual_alias_expansion_limit", 1000
            ),
            transports=TransportConfig.from_settings(settings),
        )


def interface_addresses(words: tuple[str, ...]) -> frozenset[str]:
    """IP addresses from inet_interfaces/proxy_interfaces. ``all`` contributes loopback only
    (interfaces are not enumerated): mail to ``[public-ip]`` is then remote, never relayed."""
    out: set[str] = set()
    for w in words:
        if w in ("all", "loopback-only", "localhost"):
            out.update(("127.0.0.1", "::1"))
            continue
        try:
            out.add(ipaddress.ip_address(w.strip("[]")).compressed)
        except ValueError:
            continue  # a hostname: resolving it is not routing's job
    return frozenset(out)


def literal_address(domain: str) -> str | None:
    """``[1.2.3.4]`` / ``[IPv6:::1]`` → compressed IP; None for anything else."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return ipaddress.ip_address(inner).compressed
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Resolution:
    address: str
    klass: AddressClass
    transport: str  # an Agent value: "maildir" | "smtp" | "lmtp" | "error" | "discard" | …
    mailbox: Path | None = None
    nexthop: str | None = None
    error: str | None = None
    transport_name: str = ""  # as configured ("relay", "smtp", …), for logs and queues


class Router:
    """Routes recipients per a :class:`RoutingConfig`. Cheap to call; caches domain classes."""

    __slots__ = ("_class_cache", "_transports", "config")

    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self._class_cache: dict[str, AddressClass] = {}
        self._transports = TransportSelector(
            config.transports
            or TransportConfig((), "smtp", "relay", "local", "virtual", "", "", False)
        )

    # -- domains ---------------------------------------------------------------------

    def domain_class(self, domain: str) -> AddressClass:
        d = normalize_domain(domain) or self.config.myhostname
        klass = self._class_cache.get(d)
        if klass is None:
            klass = self._classify(d)
            if len(self._class_cache) >= _CLASS_CACHE_MAX:
                self._class_cache.clear()  # attacker-chosen domains must not grow memory
            self._class_cache[d] = klass
        return klass

    def _classify(self, d: str) -> AddressClass:
        c = self.config
        literal = literal_address(d)
        if literal is not None:
            return AddressClass.LOCAL if literal in c.local_addresses else AddressClass.DEFAULT
        # Postfix precedence: local, then virtual alias, virtual mailbox, relay.
        if c.mydestination.matches(d):
            return AddressClass.LOCAL
        if c.virtual_alias_domains.matches(d):
            return AddressClass.VIRTUAL_ALIAS
        if c.virtual_mailbox_domains.matches(d):
            return AddressClass.VIRTUAL_MAILBOX
        if c.relay_domains.matches(d):
            return AddressClass.RELAY
        return AddressClass.DEFAULT

    def is_final_destination(self, domain: str) -> bool:
        return self.domain_class(domain) in FINAL_CLASSES

    def final_destination(self, local: str, domain: str) -> tuple[str, str]:
        """``(local, domain)`` after peeling sender-specified routing off our own domains.

        Only LOCAL domains (mydestination, our [ip] literals) are stripped, as in Postfix:
        routing operators left in a virtual or relay address are caught as "routed" by
        the relay check instead.
        """
        c = self.config
        return resolve_route(
            local,
            domain,
            is_local=self._is_local_domain,
            percent_hack=c.allow_percent_hack,
            swap_bangpath=c.swap_bangpath,
            default_domain=c.myhostname,
        )

    def _is_local_domain(self, domain: str) -> bool:
        return self.domain_class(domain) is AddressClass.LOCAL

    def _resolved(self, address: str) -> tuple[str, str, AddressClass]:
        local, domain = self.final_destination(*split_address(address))
        return local, domain, self.domain_class(domain)

    # -- lookups ---------------------------------------------------------------------

    def _find(
        self, tables: tuple[LookupTable, ...], local: str, domain: str, bare: bool
    ) -> tuple[str, str] | None:
        """mail_addr_find() order → ``(value, unmatched extension)``.

        ``user+ext@domain``, ``user@domain``, then (``bare``: the domain is local or
        $myorigin) ``user+ext``, ``user``, then the ``@domain`` catch-all.
        """
        if not tables:
            return None
        llocal = local.lower()
        base, ext = split_extension(llocal, self.config.recipient_delimiter)
        keys: list[tuple[str, str]] = [(f"{llocal}@{domain}", "")]
        if ext:
            keys.append((f"{base}@{domain}", ext))
        if bare:
            keys.append((llocal, ""))
            if ext:
                keys.append((base, ext))
        keys.append(("@" + domain, ext))
        for key, unmatched in keys:
            for table in tables:
                value = table.lookup(key)
                if value is not None:
                    return value, unmatched
        return None

    def _bare_ok(self, domain: str, klass: AddressClass) -> bool:
        return klass is AddressClass.LOCAL or domain == self.config.myorigin

    def lookup_recipient(self, address: str) -> tuple[AddressClass, bool | None]:
        """``(class, known)``; known is None when the domain is not ours."""
        c = self.config
        local, domain, klass = self._resolved(address)
        if klass not in FINAL_CLASSES:
            return klass, None
        bare = self._bare_ok(domain, klass)
        if self._find(c.virtual_alias_maps, local, domain, bare) is not None:
            return klass, True
        if klass is AddressClass.VIRTUAL_ALIAS:
            return klass, False
        # An empty map list means "accept every local part" (Postfix semantics).
        maps = (
            c.virtual_mailbox_maps
            if klass is AddressClass.VIRTUAL_MAILBOX
            else (c.local_recipient_maps)
        )
        if not maps:
            return klass, True
        return klass, self._find(maps, local, domain, bare) is not None

    def recipient_known(self, address: str) -> bool | None:
        return self.lookup_recipient(address)[1]

    # -- expansion -------------------------------------------------------------------

    def _qualify(self, target: str) -> str:
        if "@" in target or is_special_destination(target):
            return target
        return f"{target}@{self.config.myorigin}"

    def _aliases_for(self, address: str) -> list[str] | None:
        """One expansion step for ``address``: virtual aliases, else local aliases."""
        if is_special_destination(address):
            return None
        c = self.config
        local, domain = split_address(address)
        domain = normalize_domain(domain) or c.myorigin
        klass = self.domain_class(domain)
        found = self._find(c.virtual_alias_maps, local, domain, self._bare_ok(domain, klass))
        if found is not None:
            value, ext = found
            out = []
            for t in parse_targets(value):
                if t.startswith("@"):  # "@domain" result: keep the local part, swap domain
                    out.append(local + t)
                    continue
                t = self._qualify(t)
                out.append(add_extension(t, ext) if ext and not is_special_destination(t) else t)
            return out
        if klass is not AddressClass.LOCAL or not c.alias_maps:
            return None
        llocal = local.lower()
        base, ext = split_extension(llocal, c.recipient_delimiter)
        for key in (llocal, base) if ext else (llocal,):
            for table in c.alias_maps:
                alias = table.lookup(key)
                if alias is not None:
                    return [self._qualify(t) for t in parse_targets(alias)]
        return None

    def expand(self, address: str) -> list[str]:
        """Final recipients for ``address``, in order, deduplicated (case-insensitively).

        An address that maps to itself (``a -> a, b``) is final. A true loop
        (``a -> b -> a``) or exceeding virtual_alias_recursion_limit /
        virtual_alias_expansion_limit raises :class:`ExpansionLimitError`: the caller
        defers, as Postfix's cleanup does.
        """
        c = self.config
        out: list[str] = []
        emitted: set[str] = set()
        final: set[str] = set()  # addresses that map to themselves
        # Fully expanded already (reached twice via one-to-many): each distinct address is
        # expanded at most once, so the work is bounded by the tables, not by fan-out.
        done: set[str] = set()
        on_path: set[str] = set()
        stack: list[tuple[list[str], int, str | None]] = [([address], 0, None)]
        while stack:
            items, pos, owner = stack[-1]
            if pos == len(items):
                stack.pop()
                if owner is not None:
                    on_path.discard(owner)
                    done.add(owner)
                continue
            stack[-1] = (items, pos + 1, owner)
            addr = items[pos]
            key = addr.lower()
            if key in done:
                continue
            targets = None if key in final else self._aliases_for(addr)
            if targets is None:
                if key not in emitted:
                    if len(out) >= c.virtual_alias_expansion_limit:
                        raise ExpansionLimitError(f"alias expansion too large for {address}")
                    emitted.add(key)
                    out.append(addr)
                continue
            if key in on_path:
                raise ExpansionLimitError(f"alias loop at {addr}")
            if len(stack) > c.virtual_alias_recursion_limit:
                raise ExpansionLimitError(f"alias nesting too deep for {address}")
            if any(t.lower() == key for t in targets):
                final.add(key)
            on_path.add(key)
            stack.append((targets, 0, key))
        return out

    # -- resolution ------------------------------------------------------------------

    def resolve(self, address: str) -> Resolution:
        """Where one (already expanded) recipient is delivered."""
        if is_special_destination(address):
            return _error(address, AddressClass.LOCAL, "alias destination type not supported")
        local, domain, klass = self._resolved(address)
        final = f"{local}@{domain}"
        if klass is AddressClass.RELAY or klass is AddressClass.DEFAULT:
            route = self._transports.remote(local, domain, relay_class=klass is AddressClass.RELAY)
            return _routed(final, klass, route)
        if klass is AddressClass.VIRTUAL_ALIAS:
            return _error(final, klass, "User unknown in virtual alias table")
        res = self._final(local, domain, klass, final)
        local_route = self._transports.final(
            local, domain, virtual=klass is AddressClass.VIRTUAL_MAILBOX
        )
        if local_route is None:
            return res
        if res.transport == "error" and (res.error or "").startswith("User unknown"):
            return res  # an unknown user stays unknown whatever the transport
        # Another agent (LMTP to Dovecot, say) delivers: the Maildir path is not ours.
        return _routed(final, klass, local_route)

    def _final(self, local: str, domain: str, klass: AddressClass, final: str) -> Resolution:
        c = self.config
        if klass is AddressClass.VIRTUAL_MAILBOX:
            # virtual(8) looks up the full address and the @domain catch-all, never bare user.
            found = self._find(c.virtual_mailbox_maps, local, domain, bare=False)
            if found is None:
                return _error(final, klass, "User unknown in virtual mailbox table")
            return _maildir(final, klass, c.virtual_mailbox_base, found[0])
        found = None
        if c.local_recipient_maps:
            found = self._find(c.local_recipient_maps, local, domain, bare=True)
            if found is None:
                return _error(final, klass, "User unknown in local recipient table")
        if found is not None and found[0].rstrip().endswith("/"):
            return _maildir(final, klass, c.virtual_mailbox_base, found[0])
        user = split_extension(local.lower(), c.recipient_delimiter)[0]
        if not user or user in (".", "..") or "/" in user or "\0" in user:
            return _error(final, klass, "unsafe mailbox name")
        return Resolution(final, klass, "maildir", mailbox=c.virtual_mailbox_base / user)


def _error(address: str, klass: AddressClass, text: str) -> Resolution:
    return Resolution(address, klass, "error", error=text, transport_name="error")


def _routed(address: str, klass: AddressClass, route: Route) -> Resolution:
    if route.agent is Agent.ERROR:
        return Resolution(
            address, klass, "error", error=route.nexthop, transport_name=route.transport
        )
    return Resolution(
        address, klass, route.agent.value, nexthop=route.nexthop, transport_name=route.transport
    )


def _maildir(address: str, klass: AddressClass, base: Path, value: str) -> Resolution:
    value = value.strip()
    if not value.endswith("/"):
        return _error(address, klass, "mailbox format not supported")
    if "\0" in value or value.startswith(("/", "~")):
        return _error(address, klass, "unsafe mailbox path")
    parts = PurePosixPath(value).parts
    if not parts or ".." in parts:
        return _error(address, klass, "unsafe mailbox path")
    return Resolution(address, klass, "maildir", mailbox=base.joinpath(*parts))
