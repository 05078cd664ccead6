"""Result values shared by SPF, DKIM, DMARC, ARC and the Authentication-Results header.

Owns the vocabulary only. Result words are RFC 8601's (``pass``, ``fail``, ``softfail``,
``neutral``, ``none``, ``temperror``, ``permerror``; DKIM adds ``policy``). A
``temperror`` is always temporary: it never turns into a 5xx or a bounce by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SpfResult:
    """One SPF check_host() (RFC 7208) of the MAIL FROM identity (or HELO if null)."""

    result: str  # pass fail softfail neutral none temperror permerror
    domain: str  # the domain checked (MAIL FROM's, or the HELO name)
    identity: str  # "mailfrom" or "helo"
    client_address: str
    explanation: str = ""  # the exp= text or the reason (for 550 replies and logs)
    mechanism: str = ""  # what matched, for Received-SPF


@dataclass(frozen=True, slots=True)
class DkimResult:
    """One DKIM-Signature header's verification (RFC 6376)."""

    result: str  # pass fail neutral policy temperror permerror (none: no signature)
    domain: str  # d=
    selector: str = ""  # s=
    algorithm: str = ""  # a= (rsa-sha256, ed25519-sha256)
    reason: str = ""  # why not pass, for the header comment and logs
    header_b: str = ""  # the first 8 characters of b=, RFC 6008 header.b


@dataclass(frozen=True, slots=True)
class DmarcResult:
    """DMARC (RFC 7489) for the RFC5322.From domain."""

    result: str  # pass fail none temperror permerror
    from_domain: str
    policy: str = "none"  # the policy that applies: none quarantine reject
    disposition: str = "none"  # what we do after pct: none quarantine reject
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ArcResult:
    """ARC chain validation (RFC 8617) of the message as it arrived."""

    result: str  # none pass fail
    instance: int = 0  # highest i= found
    reason: str = ""


@dataclass(frozen=True, slots=True)
class InboundResults:
    """Everything checked for one inbound message, as the header builder needs it."""

    spf: SpfResult | None = None
    dkim: tuple[DkimResult, ...] = field(default_factory=tuple)
    dmarc: DmarcResult | None = None
    arc: ArcResult | None = None
