"""SPF and DMARC restrictions: ironpost's own names, registered beside Postfix's.

Postfix has no built-in SPF or DMARC restriction (it delegates to policyd-spf and
milters); these names are ironpost's: ``check_spf``, ``reject_spf_fail``,
``reject_spf_softfail``, ``reject_spf_permerror``, ``defer_spf_temperror`` and
``reject_dmarc_policy``.

Owns computing the transaction's SPF result once (cached in ``ctx.spf``; ``set_sender``
clears it) and turning it into replies. The SPF identity is MAIL FROM, or HELO for the
null sender; without a sender yet (a client or HELO list run without delay_reject) or
without a resolver, every SPF restriction answers DUNNO.

Invariants: ``check_spf`` never refuses; a temperror refuses only through
``defer_spf_temperror`` and only with a 4xx; explanation texts from a domain's ``exp=``
are sanitized (printable ASCII, bounded) before they reach the client.

``reject_dmarc_policy`` needs the message (the From header), so it acts at end of DATA in
:class:`ironpost.auth.inbound.InboundAuth`; its presence in any ``smtpd_*_restrictions``
list switches enforcement on, and here, at SMTP command time, it is a DUNNO.
"""

from __future__ import annotations

import asyncio
import re

from ironpost.auth.dnsbridge import BlockingDns
from ironpost.auth.spf import check_spf as _check_spf
from ironpost.auth.types import SpfResult
from ironpost.policy.context import PolicyContext
from ironpost.policy.registry import restriction
from ironpost.policy.verdicts import Decision, Verdict

#: RFC 7372 §3.2: X.7.23 "SPF validation failed", X.7.24 "SPF validation error".
SPF_FAIL_CODE, SPF_FAIL_ENHANCED = 550, "5.7.23"
SPF_PERMERROR_ENHANCED = "5.7.24"
#: What Postfix's policyd-spf sends for a temperror it is told to defer.
SPF_TEMPERROR_CODE, SPF_TEMPERROR_ENHANCED = 451, "4.4.3"

DUNNO = Decision(Verdict.DUNNO, None, "")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


async def transaction_spf(ctx: PolicyContext) -> SpfResult | None:
    """This transaction's SPF result, computed on first use and cached in ``ctx.spf``."""
    if ctx.spf is not None:
        return ctx.spf
    if ctx.resolver is None or ctx.sender is None:
        return None
    blocking = BlockingDns(ctx.resolver, asyncio.get_running_loop())
    ctx.spf = await _check_spf(blocking, ctx.client_address, ctx.sender, ctx.helo or "")
    return ctx.spf


def _sanitize(text: str) -> str:
    return _UNPRINTABLE.sub("", text)[:200].strip()


def _refuse(ctx: PolicyContext, name: str, spf: SpfResult, code: int, enhanced: str) -> Decision:
    if spf.identity == "helo":
        target = (ctx.helo or "", "Helo command")
    else:
        target = (ctx.sender or "", "Sender address")
    detail = _sanitize(spf.explanation)
    text = f"SPF {spf.result}" + (f": {detail}" if detail else "")
    return ctx.refuse(name, code, enhanced, text, target=target)


@restriction("check_spf")
async def check_spf(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    """Compute and cache the SPF result (for Received-SPF and DMARC); never refuses."""
    await transaction_spf(ctx)
    return DUNNO


@restriction("reject_spf_fail")
async def reject_spf_fail(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    spf = await transaction_spf(ctx)
    if spf is None or spf.result != "fail":
        return DUNNO
    return _refuse(ctx, "reject_spf_fail", spf, SPF_FAIL_CODE, SPF_FAIL_ENHANCED)


@restriction("reject_spf_softfail")
async def reject_spf_softfail(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    """Refuses softfail (and fail): for domains whose ``~all`` means "not us" in practice."""
    spf = await transaction_spf(ctx)
    if spf is None or spf.result not in ("fail", "softfail"):
        return DUNNO
    return _refuse(ctx, "reject_spf_softfail", spf, SPF_FAIL_CODE, SPF_FAIL_ENHANCED)


@restriction("reject_spf_permerror")
async def reject_spf_permerror(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    spf = await transaction_spf(ctx)
    if spf is None or spf.result != "permerror":
        return DUNNO
    return _refuse(ctx, "reject_spf_permerror", spf, SPF_FAIL_CODE, SPF_PERMERROR_ENHANCED)


@restriction("defer_spf_temperror")
async def defer_spf_temperror(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    spf = await transaction_spf(ctx)
    if spf is None or spf.result != "temperror":
        return DUNNO
    return _refuse(ctx, "defer_spf_temperror", spf, SPF_TEMPERROR_CODE, SPF_TEMPERROR_ENHANCED)


@restriction("reject_dmarc_policy")
def reject_dmarc_policy(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    """A marker: DMARC is enforced at end of DATA by the inbound pipeline."""
    return DUNNO
