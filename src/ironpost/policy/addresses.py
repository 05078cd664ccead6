"""Checks shared by sender and recipient restrictions (same rules, different wording).

Owns: "is this address fully qualified" (reject_non_fqdn_*), "is this address one of our
users" (reject_unlisted_*, via the router's recipient tables), and the access(5) lookup
keys of an address after resolution (so ``user%remote@ours`` is looked up as
``user@remote``, as Postfix does).
"""

from __future__ import annotations

from ironpost.policy.access import address_keys, check_access
from ironpost.policy.context import PolicyContext
from ironpost.policy.verdicts import Decision, Verdict
from ironpost.routing import AddressClass

_UNKNOWN = {
    AddressClass.LOCAL: ("unknown_local_recipient_reject_code", "local recipient table"),
    AddressClass.VIRTUAL_ALIAS: ("unknown_virtual_alias_reject_code", "virtual alias table"),
    AddressClass.VIRTUAL_MAILBOX: ("unknown_virtual_mailbox_reject_code", "virtual mailbox table"),
}


def non_fqdn(
    ctx: PolicyContext, restriction: str, address: str | None, domain: str, klass: str
) -> Decision:
    if not address:  # no address yet, or the null sender
        return Decision(Verdict.DUNNO, None, restriction)
    if domain.startswith("[") or ("." in domain and not domain.startswith(".")):
        return Decision(Verdict.DUNNO, None, restriction)
    code = ctx.params.non_fqdn_reject_code
    return ctx.refuse(
        restriction,
        code,
        f"{str(code)[0]}.5.2",
        "need fully-qualified address",
        target=(address, klass),
    )


def unlisted(
    ctx: PolicyContext, restriction: str, address: str | None, local: str, domain: str, klass: str
) -> Decision:
    if not address:
        return Decision(Verdict.DUNNO, None, restriction)
    aclass, known = ctx.router.lookup_recipient(f"{local}@{domain}")
    if known is not False:
        return Decision(Verdict.DUNNO, None, restriction)
    param, table = _UNKNOWN[aclass]
    code: int = getattr(ctx.params, param)
    return ctx.refuse(
        restriction,
        code,
        f"{str(code)[0]}.1.1",
        f"User unknown in {table}",
        target=(address, klass),
    )


async def access(
    ctx: PolicyContext,
    restriction: str,
    spec: str,
    address: str | None,
    local: str,
    domain: str,
    klass: str,
) -> Decision:
    if address is None:
        return Decision(Verdict.DUNNO, None, restriction)
    if address == "":
        keys = [ctx.params.null_access_lookup_key]
    else:
        local, domain = ctx.router.final_destination(local, domain)
        keys = address_keys(
            local,
            domain,
            delimiter=ctx.router.config.recipient_delimiter,
            parent_style=ctx.params.access_parent_matches_subdomains,
        )
    return await check_access(ctx, restriction, spec, keys, (address, klass))
