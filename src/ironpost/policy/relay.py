"""Relay control: reject_unauth_destination, defer_unauth_destination, permit_auth_destination.

Owns the one rule that keeps ironpost from being an open relay: a recipient is an
authorized destination only if its *final* domain (after the router peels ``%``, ``!``,
quoted ``@`` and double ``@`` off our own domains) is ours (local, virtual alias, virtual
mailbox) or in relay_domains. A non-local final address that still carries a routing
operator in its local part (``user%remote@relay.example``) is "routed" and refused unless
allow_untrusted_routing = yes, as in Postfix.
"""

from __future__ import annotations

from ironpost.policy.context import PolicyContext
from ironpost.policy.registry import restriction
from ironpost.policy.verdicts import Decision, Verdict
from ironpost.routing.addresses import ROUTING_OPERATORS
from ironpost.routing.router import AddressClass

_AUTHORIZED = frozenset(
    {
        AddressClass.LOCAL,
        AddressClass.VIRTUAL_ALIAS,
        AddressClass.VIRTUAL_MAILBOX,
        AddressClass.RELAY,
    }
)


def authorized_destination(ctx: PolicyContext) -> bool:
    router = ctx.router
    local, domain = router.final_destination(ctx.recipient_local, ctx.recipient_domain)
    klass = router.domain_class(domain)
    if klass not in _AUTHORIZED:
        return False
    if klass is not AddressClass.LOCAL and not ctx.params.allow_untrusted_routing:
        return ROUTING_OPERATORS.isdisjoint(local)
    return True


@restriction("reject_unauth_destination", per_recipient=True)
def reject_unauth_destination(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    if ctx.recipient is None or authorized_destination(ctx):
        return Decision(Verdict.DUNNO, None, "reject_unauth_destination")
    code = ctx.params.relay_domains_reject_code
    return ctx.refuse_plain(
        "reject_unauth_destination",
        code,
        f"{str(code)[0]}.7.1",
        f"<{ctx.recipient}>: Relay access denied",
    )


@restriction("defer_unauth_destination", per_recipient=True)
def defer_unauth_destination(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    if ctx.recipient is None or authorized_destination(ctx):
        return Decision(Verdict.DUNNO, None, "defer_unauth_destination")
    return ctx.refuse_plain(
        "defer_unauth_destination", 454, "4.7.1", f"<{ctx.recipient}>: Relay access denied"
    )


@restriction("permit_auth_destination", per_recipient=True)
def permit_auth_destination(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    if ctx.recipient is not None and authorized_destination(ctx):
        return Decision(Verdict.PERMIT, None, "permit_auth_destination")
    return Decision(Verdict.DUNNO, None, "permit_auth_destination")
