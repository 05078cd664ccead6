"""Transport selection: which delivery agent and next hop a resolved recipient gets.

Owns Postfix trivial-rewrite's ``transport:nexthop`` choice: ``transport_maps`` first,
then the address class's default (``local_transport``, ``virtual_transport``,
``relay_transport``, ``default_transport``), and for the remote classes the next hop
from, in decreasing precedence, transport_maps, the transport's own ``:nexthop``,
``relayhost`` and the recipient domain (transport(5)).

Postfix transport names map onto ironpost's agents by kind: ``smtp`` and ``relay`` are
the SMTP client, ``lmtp`` the LMTP client, ``local`` and ``virtual`` the Maildir agent,
``error`` and ``discard`` what they say. Any other name is a configuration error that
defers the recipient (Postfix: "mail transport unavailable"), never a bounce.

Invariants: lookups use lowercased keys; a table value is parsed once per lookup with
no regular expressions; nothing here touches DNS or the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ironpost.config.tables import LookupTable
from ironpost.routing.addresses import split_extension
from ironpost.routing.domains import parent_domains
from ironpost.routing.settings import SettingsLike, optional


class Agent(StrEnum):
    SMTP = "smtp"
    LMTP = "lmtp"
    MAILDIR = "maildir"
    ERROR = "error"
    DISCARD = "discard"
    UNAVAILABLE = "unavailable"  # a transport name ironpost does not run


_AGENTS: dict[str, Agent] = {
    "smtp": Agent.SMTP,
    "relay": Agent.SMTP,
    "lmtp": Agent.LMTP,
    "local": Agent.MAILDIR,
    "virtual": Agent.MAILDIR,
    "error": Agent.ERROR,
    "discard": Agent.DISCARD,
    # Postfix's "retry" transport defers (used to park a domain); we honour it as such.
    "retry": Agent.UNAVAILABLE,
}


def agent_for(transport: str) -> Agent:
    return _AGENTS.get(transport.lower(), Agent.UNAVAILABLE)


def split_transport(value: str) -> tuple[str, str]:
    """``"smtp:[10.0.0.1]:25"`` -> ``("smtp", "[10.0.0.1]:25")``; ``":[gw]"`` -> ``("", "[gw]")``.

    A value without a colon is a transport name alone (``"local"``), as in Postfix.
    """
    value = value.strip()
    name, sep, nexthop = value.partition(":")
    if not sep:
        return name, ""
    return name, nexthop


@dataclass(frozen=True, slots=True)
class Route:
    transport: str  # the Postfix transport name as configured ("relay", "smtp", "lmtp", …)
    agent: Agent
    nexthop: str  # "" for maildir/discard; the error text for Agent.ERROR


@dataclass(frozen=True, slots=True)
class TransportConfig:
    transport_maps: tuple[LookupTable, ...]
    default_transport: str
    relay_transport: str
    local_transport: str
    virtual_transport: str
    relayhost: str
    recipient_delimiter: str
    parent_matches: bool  # parent_domain_matches_subdomains lists transport_maps

    @classmethod
    def from_settings(cls, settings: SettingsLike) -> TransportConfig:
        no_words: tuple[str, ...] = ()
        no_tables: tuple[LookupTable, ...] = ()
        parent = optional(settings.words, "parent_domain_matches_subdomains", no_words)
        return cls(
            transport_maps=optional(settings.tables, "transport_maps", no_tables),
            default_transport=optional(settings.text, "default_transport", "smtp"),
            relay_transport=optional(settings.text, "relay_transport", "relay"),
            local_transport=optional(settings.text, "local_transport", "local"),
            virtual_transport=optional(settings.text, "virtual_transport", "virtual"),
            relayhost=optional(settings.text, "relayhost", ""),
            recipient_delimiter=optional(settings.text, "recipient_delimiter", ""),
            parent_matches="transport_maps" in parent,
        )


class TransportSelector:
    """Chooses ``transport:nexthop`` for a final address. Cheap; no I/O."""

    __slots__ = ("config",)

    def __init__(self, config: TransportConfig) -> None:
        self.config = config

    def lookup(self, local: str, domain: str) -> tuple[str, str] | None:
        """transport_maps in transport(5) order: user+ext@domain, user@domain, domain,
        parent domains (``.parent``, or bare ``parent`` when parent matching is on), ``*``."""
        tables = self.config.transport_maps
        if not tables:
            return None
        llocal = local.lower()
        keys = [f"{llocal}@{domain}"]
        base, ext = split_extension(llocal, self.config.recipient_delimiter)
        if ext:
            keys.append(f"{base}@{domain}")
        keys.append(domain)
        for parent in parent_domains(domain):
            keys.append("." + parent)
            if self.config.parent_matches:
                keys.append(parent)
        keys.append("*")
        for key in keys:
            for table in tables:
                value = table.lookup(key)
                if value is not None:
                    return split_transport(value)
        return None

    def remote(self, local: str, domain: str, *, relay_class: bool) -> Route:
        """Route for the RELAY (``relay_class``) and DEFAULT address classes."""
        c = self.config
        class_default = c.relay_transport if relay_class else c.default_transport
        default_name, default_hop = split_transport(class_default)
        found = self.lookup(local, domain)
        name, hop = found if found is not None else ("", "")
        if not name:
            name = default_name or "smtp"
        agent = agent_for(name)
        if agent is Agent.ERROR:
            return Route(name, agent, hop or "mail for this domain is not deliverable")
        if agent in (Agent.MAILDIR, Agent.DISCARD):
            return Route(name, agent, hop)
        # Next hop precedence: transport_maps, the transport's own nexthop, relayhost,
        # the recipient domain.
        nexthop = hop or default_hop or c.relayhost or domain
        return Route(name, agent, nexthop)

    def final(self, local: str, domain: str, *, virtual: bool) -> Route | None:
        """Route for LOCAL/VIRTUAL_MAILBOX recipients when it is not the Maildir agent.

        ``None`` means the built-in Maildir delivery (``local``/``virtual``).
        """
        c = self.config
        found = self.lookup(local, domain)
        class_default = c.virtual_transport if virtual else c.local_transport
        default_name, default_hop = split_transport(class_default)
        name, hop = found if found is not None else ("", "")
        if not name:
            name = default_name
        agent = agent_for(name)
        if agent is Agent.MAILDIR:
            return None
        if agent is Agent.ERROR:
            return Route(
                name, agent, hop or default_hop or "mail for this domain is not deliverable"
            )
        return Route(name, agent, hop or default_hop or domain)
