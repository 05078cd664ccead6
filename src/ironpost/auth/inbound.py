"""The inbound checking pipeline the server calls at end of DATA: SPF, DKIM, ARC, DMARC,
then the header fields that record them.

Owns :class:`InboundAuth` (configured once from the settings) and :class:`InboundVerdict`
(what one message gets: header fields to prepend, the content with forged fields
removed, and a DMARC refusal or quarantine). SPF, DKIM and ARC run concurrently in
worker threads (pyspf and dkimpy are blocking libraries), each query through
:class:`~ironpost.auth.dnsbridge.BlockingDns`.

Invariants:
- ``check`` never raises for anything in the message or the DNS; a verifier that crashes
  counts as ``temperror`` for its method (never ``pass``);
- DMARC refuses or quarantines only when ``reject_dmarc_policy`` is in a restriction list,
  only on a ``fail`` (never on a temperror), and never for ``skip_dmarc`` mail (our
  SASL-authenticated submissions and ``$mynetworks``);
- the prepended fields come in this order: Authentication-Results, then the quarantine
  marker (if any), then Received-SPF; incoming copies of our A-R and of the marker are
  always removed from ``content``, so the marker can only be ours.
"""

from __future__ import annotations

import asyncio
import importlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ironpost.auth.dmarc import evaluate_dmarc, from_domains, worst
from ironpost.auth.dnsbridge import BlockingDns
from ironpost.auth.results import (
    QUARANTINE_FIELD,
    authentication_results,
    header_end,
    received_spf,
    strip_forged,
)
from ironpost.auth.spf import SPF_TIMEOUT, check_spf
from ironpost.auth.types import ArcResult, DkimResult, DmarcResult, InboundResults, SpfResult
from ironpost.dns.types import Resolver
from ironpost.policy.context import enhanced_for
from ironpost.policy.verdicts import Stage
from ironpost.protocol.replies import Reply
from ironpost.routing.settings import optional


def _optional_verifier(module: str, name: str) -> Callable[..., Any] | None:
    """The DKIM/ARC verifier if that part of issue #5 is in the tree, else None ("none")."""
    try:
        verifier: Callable[..., Any] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return verifier


_verify_dkim = _optional_verifier("ironpost.auth.dkim_verify", "verify_dkim")
_verify_arc = _optional_verifier("ironpost.auth.arc", "verify_arc")
DEFAULT_REJECT_TEXT = "Rejected by the DMARC policy of"


class AuthSettings(Protocol):
    def text(self, name: str) -> str: ...

    def integer(self, name: str) -> int: ...

    def boolean(self, name: str) -> bool: ...

    def words(self, name: str) -> tuple[str, ...]: ...

    def seconds(self, name: str) -> float: ...


@dataclass(frozen=True, slots=True)
class InboundVerdict:
    headers: bytes  # header lines to prepend (A-R, Received-SPF), CRLF-terminated
    content: bytes  # the message with forged A-R headers removed (unchanged object if none)
    reply: Reply | None  # DMARC reject (550 5.7.1 …) or None
    quarantine: bool  # DMARC quarantine applied
    results: InboundResults


def dmarc_enforced(settings: AuthSettings) -> bool:
    """True if ``reject_dmarc_policy`` appears in any ``smtpd_*_restrictions`` list."""
    none: tuple[str, ...] = ()
    return any(
        "reject_dmarc_policy" in optional(settings.words, stage.value, none) for stage in Stage
    )


@dataclass(slots=True)
class InboundAuth:
    resolver: Resolver
    authserv_id: str
    loop: asyncio.AbstractEventLoop | None = None
    enforce_dmarc: bool = False
    dmarc_reject_code: int = 550
    dmarc_reject_text: str = DEFAULT_REJECT_TEXT
    quarantine_action: str = "junk"  # or "header": A-R only, no marker
    received_spf: bool = True
    spf_timeout: float = SPF_TIMEOUT
    dkim_max_signatures: int = 5
    dkim_timeout: float = 10.0
    rand: Callable[[], float] = random.random
    # The verifiers, replaceable so the pipeline can run before/without them.
    verify_dkim: Callable[..., Sequence[DkimResult]] | None = _verify_dkim
    verify_arc: Callable[[bytes, BlockingDns], ArcResult] | None = _verify_arc

    @classmethod
    def from_settings(
        cls,
        settings: AuthSettings,
        resolver: Resolver,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> InboundAuth:
        authserv_id = optional(settings.text, "authserv_id", "") or settings.text("myhostname")
        return cls(
            resolver=resolver,
            authserv_id=authserv_id,
            loop=loop,
            enforce_dmarc=dmarc_enforced(settings),
            dmarc_reject_code=optional(settings.integer, "dmarc_reject_code", 550),
            dmarc_reject_text=optional(settings.text, "dmarc_reject_text", DEFAULT_REJECT_TEXT),
            quarantine_action=optional(settings.text, "dmarc_quarantine_action", "junk"),
            received_spf=optional(settings.boolean, "spf_received_header", True),
            spf_timeout=optional(settings.seconds, "spf_check_timeout", SPF_TIMEOUT),
            dkim_max_signatures=optional(settings.integer, "dkim_max_signatures", 5),
            dkim_timeout=optional(settings.seconds, "dkim_key_fetch_timeout", 10.0),
        )

    # --- the checks -----------------------------------------------------------------------

    async def _dkim(self, content: bytes, dns: BlockingDns) -> tuple[DkimResult, ...]:
        verify = self.verify_dkim
        if verify is None:
            return ()
        work = asyncio.to_thread(
            verify, content, dns, max_signatures=self.dkim_max_signatures, timeout=self.dkim_timeout
        )
        try:
            return tuple(await asyncio.wait_for(work, self.dkim_timeout + 5.0))
        except Exception as exc:  # a verifier bug or overrun: temporary, never a pass
            return (DkimResult("temperror", "", reason=f"verifier: {type(exc).__name__}"),)

    async def _arc(self, content: bytes, dns: BlockingDns) -> ArcResult | None:
        verify = self.verify_arc
        if verify is None or b"arc-seal" not in content[: header_end(content)].lower():
            # No ARC-Seal field in the header: "none" without a thread round-trip.
            return ArcResult("none") if verify is not None else None
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(verify, content, dns), self.dkim_timeout + 5.0
            )
        except Exception as exc:
            return ArcResult("fail", reason=f"verifier: {type(exc).__name__}")

    async def _dmarc(
        self, content: bytes, spf: SpfResult | None, dkim: Sequence[DkimResult]
    ) -> DmarcResult:
        domains = from_domains(content)
        if domains is None:
            return DmarcResult("permerror", "", reason="no usable From address")
        results = [
            await evaluate_dmarc(self.resolver, d, spf, dkim, rand=self.rand) for d in domains
        ]
        chosen = worst(results)
        assert chosen is not None  # domains is never empty
        return chosen

    async def check(
        self,
        content: bytes,
        *,
        client_address: str,
        helo: str,
        sender: str,
        spf: SpfResult | None,
        skip_dmarc: bool,
    ) -> InboundVerdict:
        """Authenticate one received message; see the module docstring for the guarantees."""
        loop = self.loop or asyncio.get_running_loop()
        dns = BlockingDns(self.resolver, loop, timeout=min(self.dkim_timeout, self.spf_timeout))
        spf_task: Any = (
            check_spf(
                dns,
                client_address,
                sender,
                helo,
                timeout=self.spf_timeout,
                receiver=self.authserv_id,
            )
            if spf is None
            else _done(spf)
        )
        spf_result, dkim, arc = await asyncio.gather(
            spf_task, self._dkim(content, dns), self._arc(content, dns)
        )
        dmarc = None if skip_dmarc else await self._dmarc(content, spf_result, dkim)
        results = InboundResults(spf_result, dkim, dmarc, arc)

        reply: Reply | None = None
        quarantine = False
        if self.enforce_dmarc and dmarc is not None and dmarc.result == "fail":
            if dmarc.disposition == "reject":
                code = self.dmarc_reject_code
                text = f"{self.dmarc_reject_text} {dmarc.from_domain}"
                reply = Reply(code, enhanced_for(code, "7.1"), text)
            elif dmarc.disposition == "quarantine":
                quarantine = True

        fields = [authentication_results(self.authserv_id, results, sender=sender)]
        if quarantine and self.quarantine_action == "junk":
            fields.append(QUARANTINE_FIELD)
        if self.received_spf:
            fields.append(
                received_spf(spf_result, receiver=self.authserv_id, sender=sender, helo=helo)
            )
        return InboundVerdict(
            b"".join(fields), strip_forged(content, self.authserv_id), reply, quarantine, results
        )


async def _done(value: SpfResult) -> SpfResult:
    return value
