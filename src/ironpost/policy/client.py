"""Client restrictions: permit_mynetworks, check_client_access.

Owns decisions that depend only on who connected (address, reverse name).
"""

from __future__ import annotations

from ironpost.policy.access import check_access, client_keys
from ironpost.policy.context import PolicyContext
from ironpost.policy.registry import restriction
from ironpost.policy.verdicts import Decision, Verdict


@restriction("permit_mynetworks")
def permit_mynetworks(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    if ctx.is_mynetworks:
        return Decision(Verdict.PERMIT, None, "permit_mynetworks")
    return Decision(Verdict.DUNNO, None, "permit_mynetworks")


@restriction("check_client_access", arity=1, tables=True)
async def check_client_access(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    keys = client_keys(
        ctx.client_name,
        ctx.client_address,
        parent_style=ctx.params.access_parent_matches_subdomains,
    )
    target = (ctx.client_label, "Client host")
    return await check_access(ctx, "check_client_access", args[0], keys, target)
