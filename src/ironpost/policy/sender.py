"""Sender (MAIL FROM) restrictions: reject_non_fqdn_sender, reject_unlisted_sender,
check_sender_access. The null sender is never non-FQDN or unlisted; for access maps it is
looked up as smtpd_null_access_lookup_key (``<>``)."""

from __future__ import annotations

from ironpost.policy import addresses
from ironpost.policy.context import PolicyContext
from ironpost.policy.registry import restriction
from ironpost.policy.verdicts import Decision

_CLASS = "Sender address"


@restriction("reject_non_fqdn_sender")
def reject_non_fqdn_sender(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return addresses.non_fqdn(ctx, "reject_non_fqdn_sender", ctx.sender, ctx.sender_domain, _CLASS)


@restriction("reject_unlisted_sender")
def reject_unlisted_sender(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return addresses.unlisted(
        ctx, "reject_unlisted_sender", ctx.sender, ctx.sender_local, ctx.sender_domain, _CLASS
    )


@restriction("check_sender_access", arity=1, tables=True)
async def check_sender_access(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await addresses.access(
        ctx,
        "check_sender_access",
        args[0],
        ctx.sender,
        ctx.sender_local,
        ctx.sender_domain,
        _CLASS,
    )
