"""Per-session policy state (PolicyContext) and reply parameters (PolicyParams).

Owns what restrictions may read about a session, and the Postfix-shaped wording of their
refusals: ``<name>: <Class> rejected: <text>``, where name/Class follow the list being
evaluated (client, helo, sender, recipient, DATA). Texts never name a table or a file.

Invariants: updating the context per RCPT is a few attribute stores; anything a
restriction list result depends on is invalidated when HELO or MAIL changes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ironpost.config.tables import LookupTable
from ironpost.policy.networks import NetworkList
from ironpost.policy.verdicts import Decision, Stage, Verdict
from ironpost.protocol.replies import Reply
from ironpost.routing import Router, split_address
from ironpost.routing.addresses import normalize_domain
from ironpost.routing.domains import DEFAULT_PARENT_MATCH
from ironpost.routing.settings import SettingsLike, optional

if TYPE_CHECKING:
    from ironpost.auth.types import SpfResult
    from ironpost.dns.types import Resolver
    from ironpost.policy.sender_login import SenderLogins

_STAGE_CLASS = {
    Stage.CLIENT: "Client host",
    Stage.HELO: "Helo command",
    Stage.SENDER: "Sender address",
    Stage.RELAY: "Recipient address",
    Stage.RECIPIENT: "Recipient address",
    Stage.DATA: "Data command",
    Stage.END_OF_DATA: "End-of-data",
}


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """Reply codes and knobs, named and defaulted as in Postfix."""

    reject_code: int = 554
    defer_code: int = 450
    relay_domains_reject_code: int = 554
    unknown_local_recipient_reject_code: int = 550
    unknown_virtual_mailbox_reject_code: int = 550
    unknown_virtual_alias_reject_code: int = 550
    invalid_hostname_reject_code: int = 501
    non_fqdn_reject_code: int = 504
    access_map_reject_code: int = 554
    access_map_defer_code: int = 450
    plaintext_reject_code: int = 450
    multi_recipient_bounce_reject_code: int = 550
    null_access_lookup_key: str = "<>"
    access_parent_matches_subdomains: bool = True
    allow_untrusted_routing: bool = False
    # DNS restrictions (policy.dnscheck, policy.dnsbl).
    unknown_address_reject_code: int = 450
    unknown_client_reject_code: int = 450
    unknown_hostname_reject_code: int = 450
    maps_rbl_reject_code: int = 554
    unknown_address_tempfail_action: str = "defer_if_permit"
    unknown_helo_hostname_tempfail_action: str = "defer_if_permit"
    default_rbl_reply: str = (
        "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
        "$rbl_domain${rbl_reason?; $rbl_reason}"
    )
    rbl_reply_maps: tuple[LookupTable, ...] = ()
    maps_rbl_domains: tuple[str, ...] = ()
    # Per list, the DNSBL/RHSBL steps ``(name, argument)`` in order: the first one run
    # starts every lookup of its list at once (policy.dnsbl.prefetch).
    dnsxl_plan: tuple[tuple[Stage, tuple[tuple[str, str], ...]], ...] = ()

    @classmethod
    def from_settings(cls, settings: SettingsLike) -> PolicyParams:
        from ironpost.policy.dnsbl import dnsxl_plan  # dnsbl imports this module

        def code(name: str, default: int) -> int:
            return optional(settings.integer, name, default)

        parent = optional(settings.words, "parent_domain_matches_subdomains", DEFAULT_PARENT_MATCH)
        return cls(
            reject_code=code("reject_code", 554),
            defer_code=code("defer_code", 450),
            relay_domains_reject_code=code("relay_domains_reject_code", 554),
            unknown_local_recipient_reject_code=code("unknown_local_recipient_reject_code", 550),
            unknown_virtual_mailbox_reject_code=code("unknown_virtual_mailbox_reject_code", 550),
            unknown_virtual_alias_reject_code=code("unknown_virtual_alias_reject_code", 550),
            invalid_hostname_reject_code=code("invalid_hostname_reject_code", 501),
            non_fqdn_reject_code=code("non_fqdn_reject_code", 504),
            access_map_reject_code=code("access_map_reject_code", 554),
            access_map_defer_code=code("access_map_defer_code", 450),
            plaintext_reject_code=code("plaintext_reject_code", 450),
            multi_recipient_bounce_reject_code=code("multi_recipient_bounce_reject_code", 550),
            null_access_lookup_key=optional(settings.text, "smtpd_null_access_lookup_key", "<>"),
            access_parent_matches_subdomains="smtpd_access_maps" in parent,
            allow_untrusted_routing=optional(settings.boolean, "allow_untrusted_routing", False),
            unknown_address_reject_code=code("unknown_address_reject_code", 450),
            unknown_client_reject_code=code("unknown_client_reject_code", 450),
            unknown_hostname_reject_code=code("unknown_hostname_reject_code", 450),
            maps_rbl_reject_code=code("maps_rbl_reject_code", 554),
            unknown_address_tempfail_action=optional(
                settings.text, "unknown_address_tempfail_action", "defer_if_permit"
            ),
            unknown_helo_hostname_tempfail_action=optional(
                settings.text, "unknown_helo_hostname_tempfail_action", "defer_if_permit"
            ),
            default_rbl_reply=optional(
                settings.text, "default_rbl_reply", DEFAULT_PARAMS.default_rbl_reply
            ),
            rbl_reply_maps=optional(settings.tables, "rbl_reply_maps", ()),
            maps_rbl_domains=optional(settings.words, "maps_rbl_domains", ()),
            dnsxl_plan=dnsxl_plan(settings),
        )


DEFAULT_PARAMS = PolicyParams()


def _no_warning(text: str) -> None:
    return None


def enhanced_for(code: int, default_detail: str = "7.1") -> str:
    """4xx → ``4.<detail>``, 5xx → ``5.<detail>``: the class digit must match the code."""
    return f"{str(code)[0]}.{default_detail}"


@dataclass(slots=True, eq=False)
class PolicyContext:
    """What restrictions see about one SMTP session. The server owns and updates it."""

    client_address: str
    router: Router
    client_name: str = "unknown"  # verified: PTR name whose A/AAAA gives the address back
    # The PTR name, unverified ("unknown" if none), and how both lookups went: "ok",
    # "unknown" (no name) or "tempfail" (DNS failed: a refusal must be 4xx, not 5xx).
    reverse_client_name: str = "unknown"
    client_name_status: str = "ok"
    reverse_client_name_status: str = "ok"
    resolver: Resolver | None = None  # for DNS restrictions; None: they answer DUNNO
    helo: str | None = None
    sender: str | None = None  # "" is the null sender
    sender_local: str = ""
    sender_domain: str = ""
    recipient: str | None = None
    recipient_local: str = ""
    recipient_domain: str = ""
    recipient_count: int = 0  # recipients accepted so far in this transaction
    sasl_username: str | None = None
    spf: SpfResult | None = None  # this transaction's SPF result, once computed
    sender_logins: SenderLogins | None = None  # smtpd_sender_login_maps, set by the engine
    tls: bool = False
    pipelined: bool = False  # the client sent ahead of our reply (set by the server)
    log_warning: Callable[[str], None] = _no_warning
    mynetworks: NetworkList | None = None
    params: PolicyParams = DEFAULT_PARAMS
    tables: Mapping[str, LookupTable] = field(default_factory=dict)  # opened by the engine
    # Access map side effects the server applies to the message (access(5) HOLD/DISCARD).
    hold: bool = False
    discard: bool = False
    # Engine bookkeeping.
    stage: Stage = Stage.CLIENT
    list_cache: dict[Stage, Decision] = field(default_factory=dict)
    touched_recipient: bool = False  # a recipient-dependent restriction ran
    recipient_maps_checked: bool = False
    _mynetworks_hit: bool | None = None

    # -- cached per connection --------------------------------------------------------

    @property
    def is_mynetworks(self) -> bool:
        hit = self._mynetworks_hit
        if hit is None:
            hit = self.mynetworks is not None and self.mynetworks.contains(self.client_address)
            self._mynetworks_hit = hit
        return hit

    @is_mynetworks.setter
    def is_mynetworks(self, value: bool) -> None:
        self._mynetworks_hit = value

    # -- updates the server makes -------------------------------------------------------

    def set_helo(self, name: str | None) -> None:
        self.helo = name
        self.list_cache.clear()

    def set_sender(self, address: str | None) -> None:
        """MAIL FROM (``""`` for the null sender, None to clear): starts a transaction."""
        self.sender = address
        if address:
            local, domain = split_address(address)
            self.sender_local, self.sender_domain = local, normalize_domain(domain)
        else:
            self.sender_local = self.sender_domain = ""
        self.recipient = None
        self.recipient_local = self.recipient_domain = ""
        self.recipient_count = 0
        self.spf = None
        self.hold = self.discard = False
        self.list_cache.clear()

    def reset(self) -> None:
        """RSET, or the end of a transaction."""
        self.set_sender(None)

    def set_recipient(
        self, address: str, local: str | None = None, domain: str | None = None
    ) -> None:
        """RCPT TO. Pass ``local``/``domain`` when the grammar already split (and dequoted) them."""
        self.recipient = address
        if local is None or domain is None:
            local, domain = split_address(address)
        self.recipient_local, self.recipient_domain = local, normalize_domain(domain)
        self.recipient_maps_checked = False

    # -- replies ------------------------------------------------------------------------

    def reply_target(self) -> tuple[str, str]:
        """``(name, Class)`` for ``<name>: Class rejected: …`` in the current list."""
        stage = self.stage
        if stage is Stage.CLIENT:
            name = self.client_label
        elif stage is Stage.HELO:
            name = self.helo or ""
        elif stage is Stage.SENDER:
            name = self.sender or ""
        elif stage is Stage.DATA:
            name = "DATA"
        elif stage is Stage.END_OF_DATA:
            name = "END-OF-MESSAGE"
        else:
            name = self.recipient or ""
        return name, _STAGE_CLASS[stage]

    @property
    def client_label(self) -> str:
        return f"{self.client_name}[{self.client_address}]"

    def refuse(
        self,
        restriction: str,
        code: int,
        enhanced: str,
        text: str,
        *,
        target: tuple[str, str] | None = None,
    ) -> Decision:
        """A REJECT (5xx) or DEFER (4xx) with ``<name>: Class rejected: text``."""
        name, klass = target if target is not None else self.reply_target()
        reply = Reply(code, enhanced, f"<{name}>: {klass} rejected: {text}")
        verdict = Verdict.DEFER if code < 500 else Verdict.REJECT
        return Decision(verdict, reply, restriction)

    def refuse_plain(self, restriction: str, code: int, enhanced: str, text: str) -> Decision:
        """A refusal whose text is given whole (``<rcpt>: Relay access denied``)."""
        verdict = Verdict.DEFER if code < 500 else Verdict.REJECT
        return Decision(verdict, Reply(code, enhanced, text), restriction)
