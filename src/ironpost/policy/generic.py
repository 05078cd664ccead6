"""Generic restrictions: permit, reject, defer, dunno, warn_if_reject,
permit_sasl_authenticated, reject_unauth_pipelining, reject_plaintext_session,
reject_multi_recipient_bounce.

``warn_if_reject`` is registered so configurations validate; its effect (the *next*
restriction's REJECT/DEFER is only logged as ``reject_warning``) lives in the engine's
list evaluation, since it is about two steps, not one.
"""

from __future__ import annotations

from ironpost.policy.context import PolicyContext, enhanced_for
from ironpost.policy.registry import restriction
from ironpost.policy.verdicts import Decision, Stage, Verdict


@restriction("permit")
def permit(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return Decision(Verdict.PERMIT, None, "permit")


@restriction("dunno")
def dunno(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return Decision(Verdict.DUNNO, None, "dunno")


@restriction("reject")
def reject(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    code = ctx.params.reject_code
    return ctx.refuse("reject", code, enhanced_for(code), "Access denied")


@restriction("defer")
def defer(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    code = ctx.params.defer_code
    return ctx.refuse("defer", code, enhanced_for(code), "Try again later")


@restriction("warn_if_reject")
def warn_if_reject(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return Decision(Verdict.DUNNO, None, "warn_if_reject")  # handled by run_sequence


@restriction("permit_sasl_authenticated")
def permit_sasl_authenticated(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    if ctx.sasl_username:
        return Decision(Verdict.PERMIT, None, "permit_sasl_authenticated")
    return Decision(Verdict.DUNNO, None, "permit_sasl_authenticated")


@restriction("reject_unauth_pipelining")
def reject_unauth_pipelining(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    if not ctx.pipelined:
        return Decision(Verdict.DUNNO, None, "reject_unauth_pipelining")
    return ctx.refuse(
        "reject_unauth_pipelining", 503, "5.5.0", "Improper use of SMTP command pipelining"
    )


@restriction("reject_plaintext_session")
def reject_plaintext_session(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    if ctx.tls:
        return Decision(Verdict.DUNNO, None, "reject_plaintext_session")
    code = ctx.params.plaintext_reject_code
    return ctx.refuse(
        "reject_plaintext_session", code, enhanced_for(code), "Session encryption is required"
    )


@restriction("reject_multi_recipient_bounce", per_recipient=True)
def reject_multi_recipient_bounce(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    # At RCPT: refuse the second recipient of a bounce; at DATA: more than one accepted.
    limit = 1 if ctx.stage in (Stage.DATA, Stage.END_OF_DATA) else 0
    if ctx.sender != "" or ctx.recipient_count <= limit:
        return Decision(Verdict.DUNNO, None, "reject_multi_recipient_bounce")
    code = ctx.params.multi_recipient_bounce_reject_code
    return ctx.refuse(
        "reject_multi_recipient_bounce", code, f"{str(code)[0]}.5.3", "Multi-recipient bounce"
    )
