"""Recipient (RCPT TO) restrictions: reject_non_fqdn_recipient, reject_unlisted_recipient,
check_recipient_access. reject_unlisted_recipient answers 550 5.1.1 "User unknown in …
table" for our domains only; relay and remote recipients are not its business."""

from __future__ import annotations

from ironpost.policy import addresses
from ironpost.policy.context import PolicyContext
from ironpost.policy.registry import restriction
from ironpost.policy.verdicts import Decision

_CLASS = "Recipient address"


@restriction("reject_non_fqdn_recipient", per_recipient=True)
def reject_non_fqdn_recipient(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return addresses.non_fqdn(
        ctx, "reject_non_fqdn_recipient", ctx.recipient, ctx.recipient_domain, _CLASS
    )


@restriction("reject_unlisted_recipient", "check_recipient_maps", per_recipient=True)
def reject_unlisted_recipient(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    ctx.recipient_maps_checked = True
    return addresses.unlisted(
        ctx,
        "reject_unlisted_recipient",
        ctx.recipient,
        ctx.recipient_local,
        ctx.recipient_domain,
        _CLASS,
    )


@restriction("check_recipient_access", arity=1, tables=True, per_recipient=True)
async def check_recipient_access(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await addresses.access(
        ctx,
        "check_recipient_access",
        args[0],
        ctx.recipient,
        ctx.recipient_local,
        ctx.recipient_domain,
        _CLASS,
    )
